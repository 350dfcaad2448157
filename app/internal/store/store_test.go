package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

// fixture is a store on a database of the test's own.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	st   *store.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, storetest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return &fixture{t: t, ctx: ctx, pool: pool, st: store.New(pool)}
}

// tx runs fn in a transaction and requires it to succeed.
func (f *fixture) tx(fn func(tx store.Tx) error) {
	f.t.Helper()
	require.NoError(f.t, f.st.InTx(f.ctx, fn))
}

func (f *fixture) org(slug string) store.Organisation {
	f.t.Helper()
	var o store.Organisation
	f.tx(func(tx store.Tx) (err error) {
		o, err = tx.CreateOrganisation(f.ctx, slug, "Org "+slug)
		return err
	})
	return o
}

func (f *fixture) user(orgID int64, username string, role store.Role) store.User {
	f.t.Helper()
	var u store.User
	f.tx(func(tx store.Tx) (err error) {
		u, err = tx.CreateUser(f.ctx, store.NewUser{
			OrganisationID: orgID, Username: username, DisplayName: username,
			Role: role, PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
		})
		return err
	})
	return u
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(f.ctx, sql, args...).Scan(&n))
	return n
}

func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var fe *store.FieldError
	require.ErrorAs(t, err, &fe)
	require.ErrorIs(t, err, store.ErrInvalid)
	return fe.Field
}

func conflictOf(t *testing.T, err error) string {
	t.Helper()
	var ce *store.ConflictError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, store.ErrConflict)
	return ce.Field
}

func TestAccounts(t *testing.T) {
	f := newFixture(t)
	org := f.org("ministry-env")
	alice := f.user(org.ID, "Alice", store.RoleAdmin)
	f.user(org.ID, "bob", store.RoleContributor)

	t.Run("organisation by slug", func(t *testing.T) {
		got, err := f.st.GetOrganisationBySlug(f.ctx, "ministry-env")
		require.NoError(t, err)
		assert.Equal(t, org, got)
		_, err = f.st.GetOrganisationBySlug(f.ctx, "nope")
		assert.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("create errors", func(t *testing.T) {
		tests := []struct {
			name     string
			create   func(tx store.Tx) error
			conflict string
			field    string
			is       error
		}{
			{name: "slug taken", conflict: "slug", create: func(tx store.Tx) error {
				_, err := tx.CreateOrganisation(f.ctx, "ministry-env", "Again")
				return err
			}},
			{name: "slug malformed", field: "slug", create: func(tx store.Tx) error {
				_, err := tx.CreateOrganisation(f.ctx, "Bad Slug!", "x")
				return err
			}},
			{name: "username taken in another case", conflict: "username", create: func(tx store.Tx) error {
				_, err := tx.CreateUser(f.ctx, store.NewUser{OrganisationID: org.ID, Username: "ALICE", Role: store.RoleStaff, PasswordHash: "h"})
				return err
			}},
			{name: "unknown role", field: "role", create: func(tx store.Tx) error {
				_, err := tx.CreateUser(f.ctx, store.NewUser{OrganisationID: org.ID, Username: "carol", Role: "root", PasswordHash: "h"})
				return err
			}},
			{name: "username with space", field: "username", create: func(tx store.Tx) error {
				_, err := tx.CreateUser(f.ctx, store.NewUser{OrganisationID: org.ID, Username: "car ol", Role: store.RoleStaff, PasswordHash: "h"})
				return err
			}},
			{name: "missing organisation", is: store.ErrNotFound, create: func(tx store.Tx) error {
				_, err := tx.CreateUser(f.ctx, store.NewUser{OrganisationID: 999999, Username: "dave", Role: store.RoleStaff, PasswordHash: "h"})
				return err
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := f.st.InTx(f.ctx, tt.create)
				switch {
				case tt.conflict != "":
					assert.Equal(t, tt.conflict, conflictOf(t, err))
				case tt.field != "":
					assert.Equal(t, tt.field, fieldOf(t, err))
				default:
					assert.ErrorIs(t, err, tt.is)
				}
			})
		}
	})

	t.Run("user lookups", func(t *testing.T) {
		for _, name := range []string{"alice", "ALICE", "Alice"} {
			got, err := f.st.GetUserByUsername(f.ctx, name)
			require.NoError(t, err, name)
			assert.Equal(t, alice.ID, got.ID)
		}
		got, err := f.st.GetUserByID(f.ctx, alice.ID)
		require.NoError(t, err)
		assert.Equal(t, alice, got)
		assert.True(t, got.Active)
		assert.Equal(t, store.RoleAdmin, got.Role)
		_, err = f.st.GetUserByUsername(f.ctx, "nobody")
		assert.ErrorIs(t, err, store.ErrNotFound)
		_, err = f.st.GetUserByID(f.ctx, 999999)
		assert.ErrorIs(t, err, store.ErrNotFound)

		users, err := f.st.ListUsers(f.ctx, org.ID)
		require.NoError(t, err)
		require.Len(t, users, 2)
		assert.Equal(t, []string{"Alice", "bob"}, []string{users[0].Username, users[1].Username})
	})

	t.Run("sessions valid after and password hash", func(t *testing.T) {
		cutoff := time.Now().Add(time.Hour).Truncate(time.Microsecond)
		f.tx(func(tx store.Tx) error {
			if err := tx.SetSessionsValidAfter(f.ctx, alice.ID, cutoff); err != nil {
				return err
			}
			return tx.SetPasswordHash(f.ctx, alice.ID, "$argon2id$new")
		})
		got, err := f.st.GetUserByID(f.ctx, alice.ID)
		require.NoError(t, err)
		assert.True(t, cutoff.Equal(got.SessionsValidAfter))
		assert.Equal(t, "$argon2id$new", got.PasswordHash)

		err = f.st.InTx(f.ctx, func(tx store.Tx) error { return tx.SetSessionsValidAfter(f.ctx, 999999, cutoff) })
		assert.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestInTxWriteAndAuditCommitTogether(t *testing.T) {
	f := newFixture(t)
	boom := errors.New("boom")
	writeWithAudit := func(tx store.Tx, slug string) error {
		o, err := tx.CreateOrganisation(f.ctx, slug, "x")
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(f.ctx, store.Event{Action: "organisation.create", ObjectType: "organisation", ObjectID: o.Slug})
		return err
	}
	tests := []struct {
		name    string
		run     func(slug string) error
		wantErr error
		panics  bool
		kept    int
	}{
		{name: "commit keeps both", kept: 1, run: func(slug string) error {
			return f.st.InTx(f.ctx, func(tx store.Tx) error { return writeWithAudit(tx, slug) })
		}},
		{name: "error after both rolls both back", wantErr: boom, run: func(slug string) error {
			return f.st.InTx(f.ctx, func(tx store.Tx) error {
				if err := writeWithAudit(tx, slug); err != nil {
					return err
				}
				return boom
			})
		}},
		{name: "failing audit insert rolls back the write", wantErr: store.ErrInvalid, run: func(slug string) error {
			return f.st.InTx(f.ctx, func(tx store.Tx) error {
				if _, err := tx.CreateOrganisation(f.ctx, slug, "x"); err != nil {
					return err
				}
				_, err := tx.InsertAuditEvent(f.ctx, store.Event{Action: ""}) // empty action breaks a CHECK
				return err
			})
		}},
		{name: "panic rolls both back", panics: true, run: func(slug string) error {
			return f.st.InTx(f.ctx, func(tx store.Tx) error {
				if err := writeWithAudit(tx, slug); err != nil {
					return err
				}
				panic("handler bug")
			})
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slug := fmt.Sprintf("org-%d", i)
			if tt.panics {
				assert.PanicsWithValue(t, "handler bug", func() { _ = tt.run(slug) })
			} else if tt.wantErr != nil {
				assert.ErrorIs(t, tt.run(slug), tt.wantErr)
			} else {
				assert.NoError(t, tt.run(slug))
			}
			assert.Equal(t, tt.kept, f.count(`SELECT count(*) FROM organisations WHERE slug = $1`, slug))
			assert.Equal(t, tt.kept, f.count(`SELECT count(*) FROM audit_events WHERE object_id = $1`, slug))
			assert.Zero(t, f.pool.Stat().AcquiredConns(), "the connection went back to the pool")
		})
	}
}

func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	org := f.org("audit-org")
	u := f.user(org.ID, "auditor", store.RoleAdmin)
	var ids []int64
	for i := range 5 {
		f.tx(func(tx store.Tx) error {
			actor := u.ID
			if i == 0 {
				actor = 0 // e.g. a failed login: no actor
			}
			id, err := tx.InsertAuditEvent(f.ctx, store.Event{
				ActorUserID: actor, Action: "test.event", ObjectType: "thing", ObjectID: fmt.Sprint(i),
				RequestID: "req-" + fmt.Sprint(i), Details: map[string]any{"n": float64(i)},
			})
			ids = append(ids, id)
			return err
		})
	}

	t.Run("newest first, paginated", func(t *testing.T) {
		first, err := f.st.ListAuditEvents(f.ctx, store.AuditQuery{Limit: 3})
		require.NoError(t, err)
		require.Len(t, first, 3)
		rest, err := f.st.ListAuditEvents(f.ctx, store.AuditQuery{BeforeID: first[2].ID, Limit: 3})
		require.NoError(t, err)
		require.Len(t, rest, 2)
		var got []int64
		for _, e := range append(first, rest...) {
			got = append(got, e.ID)
		}
		assert.Equal(t, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}, got)

		oldest := rest[1]
		assert.Zero(t, oldest.ActorUserID)
		assert.Equal(t, "req-0", oldest.RequestID)
		assert.Equal(t, map[string]any{"n": float64(0)}, oldest.Details)
		assert.Equal(t, u.ID, first[0].ActorUserID)
		assert.WithinDuration(t, time.Now(), first[0].OccurredAt, time.Minute)
	})

	t.Run("append-only", func(t *testing.T) {
		for _, sql := range []string{
			`UPDATE audit_events SET action = 'forged'`,
			`DELETE FROM audit_events`,
			`TRUNCATE audit_events`,
		} {
			_, err := f.pool.Exec(f.ctx, sql)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, sql)
			assert.Equal(t, "42501", pgErr.Code, sql)
			assert.Contains(t, pgErr.Message, "append-only")
		}
		assert.Equal(t, 5, f.count(`SELECT count(*) FROM audit_events WHERE action = 'test.event'`))
	})
}

func TestIndicators(t *testing.T) {
	f := newFixture(t)
	org := f.org("indicators-org")
	staff := f.user(org.ID, "staff", store.RoleStaff)

	var ind store.Indicator
	f.tx(func(tx store.Tx) (err error) {
		ind, err = tx.CreateIndicator(f.ctx, store.NewIndicator{Code: "A.1", CreatedBy: staff.ID, IndicatorFields: store.IndicatorFields{
			Title: "Red List Index", Unit: "index", FrameworkTarget: "GBF Target 4",
		}})
		return err
	})
	assert.Equal(t, 1, ind.Version)
	assert.False(t, ind.Published)
	assert.Equal(t, staff.ID, ind.UpdatedBy)

	t.Run("create errors", func(t *testing.T) {
		tests := []struct {
			name, code, title string
			field, conflict   string
		}{
			{name: "code taken", code: "A.1", title: "x", conflict: "code"},
			{name: "code with slash", code: "A/1", title: "x", field: "code"},
			{name: "empty title", code: "A.2", title: "", field: "title"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := f.st.InTx(f.ctx, func(tx store.Tx) error {
					_, err := tx.CreateIndicator(f.ctx, store.NewIndicator{Code: tt.code, IndicatorFields: store.IndicatorFields{Title: tt.title}})
					return err
				})
				if tt.conflict != "" {
					assert.Equal(t, tt.conflict, conflictOf(t, err))
				} else {
					assert.Equal(t, tt.field, fieldOf(t, err))
				}
			})
		}
	})

	t.Run("unpublished is hidden from the public", func(t *testing.T) {
		_, err := f.st.GetPublishedIndicator(f.ctx, "A.1")
		assert.ErrorIs(t, err, store.ErrNotFound)
		got, err := f.st.GetIndicator(f.ctx, "A.1")
		require.NoError(t, err)
		assert.Equal(t, ind, got.Indicator)
		assert.Empty(t, got.DataPoints)
	})

	t.Run("optimistic update", func(t *testing.T) {
		update := func(version int) (store.Indicator, error) {
			var out store.Indicator
			err := f.st.InTx(f.ctx, func(tx store.Tx) (err error) {
				out, err = tx.UpdateIndicator(f.ctx, store.IndicatorUpdate{Code: "A.1", Version: version, UpdatedBy: staff.ID,
					IndicatorFields: store.IndicatorFields{Title: "Red List Index (v2)", Unit: "index", FrameworkTarget: "GBF Target 4", Published: true}})
				return err
			})
			return out, err
		}
		got, err := update(1)
		require.NoError(t, err)
		assert.Equal(t, 2, got.Version)
		assert.True(t, got.Published)
		assert.Equal(t, "Red List Index (v2)", got.Title)
		assert.False(t, got.UpdatedAt.Before(ind.UpdatedAt))

		_, err = update(1) // the editor who also read version 1 loses
		assert.ErrorIs(t, err, store.ErrStale)
		assert.ErrorIs(t, err, store.ErrConflict)

		err = f.st.InTx(f.ctx, func(tx store.Tx) error {
			_, err := tx.UpdateIndicator(f.ctx, store.IndicatorUpdate{Code: "Z.9", Version: 1, IndicatorFields: store.IndicatorFields{Title: "x"}})
			return err
		})
		assert.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("data points upsert", func(t *testing.T) {
		upsert := func(code string, in store.DataPointInput) (store.DataPoint, error) {
			var dp store.DataPoint
			err := f.st.InTx(f.ctx, func(tx store.Tx) (err error) {
				dp, err = tx.UpsertDataPoint(f.ctx, code, in, staff.ID)
				return err
			})
			return dp, err
		}
		before, err := f.st.GetIndicator(f.ctx, "A.1")
		require.NoError(t, err)

		first, err := upsert("A.1", store.DataPointInput{Year: 2020, Value: 0.71, Disaggregation: map[string]string{"sex": "f", "region": "north"}})
		require.NoError(t, err)
		// Same key (JSON key order does not matter): replaced, same row.
		second, err := upsert("A.1", store.DataPointInput{Year: 2020, Value: 0.75, Disaggregation: map[string]string{"region": "north", "sex": "f"}})
		require.NoError(t, err)
		assert.Equal(t, first.ID, second.ID)
		assert.Equal(t, 0.75, second.Value)
		_, err = upsert("A.1", store.DataPointInput{Year: 2019, Value: -3.5}) // nil disaggregation = total
		require.NoError(t, err)

		got, err := f.st.GetPublishedIndicator(f.ctx, "A.1")
		require.NoError(t, err)
		require.Len(t, got.DataPoints, 2)
		assert.Equal(t, 2019, got.DataPoints[0].Year, "ordered by year")
		assert.Equal(t, map[string]string{}, got.DataPoints[0].Disaggregation)
		assert.Equal(t, -3.5, got.DataPoints[0].Value)
		assert.Equal(t, map[string]string{"sex": "f", "region": "north"}, got.DataPoints[1].Disaggregation)
		assert.Equal(t, before.Version+3, got.Version, "each data point change bumps the indicator's version")

		tests := []struct {
			name  string
			code  string
			in    store.DataPointInput
			field string
			is    error
		}{
			{name: "NaN", code: "A.1", in: store.DataPointInput{Year: 2020, Value: math.NaN()}, field: "value"},
			{name: "infinity", code: "A.1", in: store.DataPointInput{Year: 2020, Value: math.Inf(1)}, field: "value"},
			{name: "year too early", code: "A.1", in: store.DataPointInput{Year: 1066, Value: 1}, field: "year"},
			{name: "empty disaggregation key", code: "A.1", in: store.DataPointInput{Year: 2020, Value: 1, Disaggregation: map[string]string{"": "x"}}, field: "disaggregation"},
			{name: "unknown indicator", code: "Z.9", in: store.DataPointInput{Year: 2020, Value: 1}, is: store.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := upsert(tt.code, tt.in)
				if tt.field != "" {
					assert.Equal(t, tt.field, fieldOf(t, err))
				} else {
					assert.ErrorIs(t, err, tt.is)
				}
			})
		}
	})
}

func TestListPublishedIndicators(t *testing.T) {
	f := newFixture(t)
	create := func(code, title, target string, published bool) store.Indicator {
		var ind store.Indicator
		f.tx(func(tx store.Tx) (err error) {
			ind, err = tx.CreateIndicator(f.ctx, store.NewIndicator{Code: code, IndicatorFields: store.IndicatorFields{
				Title: title, FrameworkTarget: target, Published: published}})
			return err
		})
		return ind
	}
	var want []string
	for i := range 25 {
		code := fmt.Sprintf("B.%02d", i)
		target := "GBF Target 3"
		if i%2 == 1 {
			target = "GBF Target 4"
		}
		create(code, "Indicator "+code, target, true)
		want = append(want, code)
	}
	create("B.99", "Hidden draft", "GBF Target 3", false)
	create("C.1", "Protected area coverage 100%", "GBF Target 3", true)
	want = append(want, "C.1")

	codes := func(page store.IndicatorPage) []string {
		var out []string
		for _, ind := range page.Indicators {
			out = append(out, ind.Code)
		}
		return out
	}

	t.Run("keyset pages are stable while others write", func(t *testing.T) {
		var got []string
		q := store.IndicatorQuery{Limit: 10}
		for pageNo := 0; ; pageNo++ {
			page, err := f.st.ListPublishedIndicators(f.ctx, q)
			require.NoError(t, err)
			got = append(got, codes(page)...)
			if pageNo == 0 {
				// Rows inserted before the cursor must not shift later pages.
				create("A.00", "Inserted before the cursor", "", true)
			}
			if page.Next == nil {
				break
			}
			q.After = page.Next
		}
		assert.Equal(t, want, got, "every published indicator once, ordered by code")
	})

	t.Run("filters", func(t *testing.T) {
		tests := []struct {
			name string
			q    store.IndicatorQuery
			want []string
		}{
			{"framework target", store.IndicatorQuery{FrameworkTarget: "GBF Target 4", Limit: 3}, []string{"B.01", "B.03", "B.05"}},
			{"search title, any case", store.IndicatorQuery{Search: "PROTECTED"}, []string{"C.1"}},
			{"search code", store.IndicatorQuery{Search: "b.2"}, []string{"B.20", "B.21", "B.22", "B.23", "B.24"}},
			{"percent sign is literal", store.IndicatorQuery{Search: "%"}, []string{"C.1"}},
			{"underscore is literal", store.IndicatorQuery{Search: "B_0"}, nil},
			{"drafts never listed", store.IndicatorQuery{Search: "draft"}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				page, err := f.st.ListPublishedIndicators(f.ctx, tt.q)
				require.NoError(t, err)
				assert.Equal(t, tt.want, codes(page))
			})
		}
	})

	t.Run("limits", func(t *testing.T) {
		f.tx(func(tx store.Tx) error {
			for i := range store.MaxLimit {
				if _, err := tx.CreateIndicator(f.ctx, store.NewIndicator{Code: fmt.Sprintf("D.%03d", i),
					IndicatorFields: store.IndicatorFields{Title: "bulk", Published: true}}); err != nil {
					return err
				}
			}
			return nil
		})
		page, err := f.st.ListPublishedIndicators(f.ctx, store.IndicatorQuery{Limit: 100000})
		require.NoError(t, err)
		assert.Len(t, page.Indicators, store.MaxLimit, "clamped to the hard maximum")
		assert.NotNil(t, page.Next)
		page, err = f.st.ListPublishedIndicators(f.ctx, store.IndicatorQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Indicators, store.DefaultLimit)

		_, err = f.st.ListPublishedIndicators(f.ctx, store.IndicatorQuery{Search: string(make([]byte, 101))})
		assert.Equal(t, "search", fieldOf(t, err))
	})

	t.Run("version changes with the published set", func(t *testing.T) {
		version := func() string {
			v, err := f.st.PublishedIndicatorsVersion(f.ctx)
			require.NoError(t, err)
			return v
		}
		seen := map[string]bool{version(): true}
		changes := []struct {
			name string
			run  func(tx store.Tx) error
		}{
			{"publish", func(tx store.Tx) error {
				_, err := tx.UpdateIndicator(f.ctx, store.IndicatorUpdate{Code: "B.99", Version: 1,
					IndicatorFields: store.IndicatorFields{Title: "Now public", Published: true}})
				return err
			}},
			{"data point", func(tx store.Tx) error {
				_, err := tx.UpsertDataPoint(f.ctx, "B.00", store.DataPointInput{Year: 2024, Value: 1}, 0)
				return err
			}},
			{"edit", func(tx store.Tx) error {
				_, err := tx.UpdateIndicator(f.ctx, store.IndicatorUpdate{Code: "B.00", Version: 2,
					IndicatorFields: store.IndicatorFields{Title: "Renamed", Published: true}})
				return err
			}},
			{"unpublish", func(tx store.Tx) error {
				_, err := tx.UpdateIndicator(f.ctx, store.IndicatorUpdate{Code: "B.99", Version: 2,
					IndicatorFields: store.IndicatorFields{Title: "Hidden again", Published: false}})
				return err
			}},
		}
		for _, c := range changes {
			f.tx(c.run)
			v := version()
			assert.False(t, seen[v], "%s changes the version", c.name)
			seen[v] = true
		}
	})
}

func TestDatasetsAndEvidence(t *testing.T) {
	f := newFixture(t)
	orgA, orgB := f.org("org-a"), f.org("org-b")
	alice := f.user(orgA.ID, "alice", store.RoleContributor)
	bob := f.user(orgB.ID, "bob", store.RoleContributor)
	gone := f.user(orgA.ID, "gone", store.RoleContributor)
	_, err := f.pool.Exec(f.ctx, `UPDATE users SET active = false WHERE id = $1`, gone.ID)
	require.NoError(t, err)

	create := func(by store.User, title string, s store.Sensitivity) store.Dataset {
		var d store.Dataset
		f.tx(func(tx store.Tx) (err error) {
			d, err = tx.CreateDataset(f.ctx, store.NewDataset{Title: title, Licence: "CC-BY-4.0", Sensitivity: s, CreatedBy: by.ID})
			return err
		})
		return d
	}
	aRestricted := create(alice, "A restricted", store.SensitivityRestricted)
	aPublic := create(alice, "A public", store.SensitivityPublic)
	bPublic := create(bob, "B public", store.SensitivityPublic)
	bInternal := create(bob, "B internal", store.SensitivityInternal)
	bRestricted := create(bob, "B restricted", store.SensitivityRestricted)
	assert.Equal(t, orgA.ID, aRestricted.OrganisationID, "a dataset belongs to its creator's organisation")

	t.Run("list: own organisation plus others' public", func(t *testing.T) {
		tests := []struct {
			viewer store.User
			want   []int64 // newest first
		}{
			{alice, []int64{bPublic.ID, aPublic.ID, aRestricted.ID}},
			{bob, []int64{bRestricted.ID, bInternal.ID, bPublic.ID, aPublic.ID}},
			{gone, nil},
		}
		for _, tt := range tests {
			t.Run(tt.viewer.Username, func(t *testing.T) {
				got, err := f.st.ListDatasetsVisibleTo(f.ctx, tt.viewer.ID, store.DatasetQuery{})
				require.NoError(t, err)
				var ids []int64
				for _, d := range got {
					ids = append(ids, d.ID)
				}
				assert.Equal(t, tt.want, ids)
			})
		}
		page, err := f.st.ListDatasetsVisibleTo(f.ctx, bob.ID, store.DatasetQuery{BeforeID: bInternal.ID, Limit: 1})
		require.NoError(t, err)
		require.Len(t, page, 1)
		assert.Equal(t, bPublic.ID, page[0].ID)
	})

	t.Run("get one: the same rule, invisible is not found", func(t *testing.T) {
		tests := []struct {
			viewer  store.User
			dataset store.Dataset
			visible bool
		}{
			{alice, aRestricted, true},
			{alice, bPublic, true},
			{alice, bInternal, false},
			{alice, bRestricted, false},
			{bob, aRestricted, false},
			{gone, aPublic, false},
		}
		for _, tt := range tests {
			t.Run(tt.viewer.Username+" "+tt.dataset.Title, func(t *testing.T) {
				got, err := f.st.GetDatasetVisibleTo(f.ctx, tt.viewer.ID, tt.dataset.ID)
				if tt.visible {
					require.NoError(t, err)
					assert.Equal(t, tt.dataset, got)
				} else {
					assert.ErrorIs(t, err, store.ErrNotFound)
				}
			})
		}
	})

	t.Run("create errors", func(t *testing.T) {
		err := f.st.InTx(f.ctx, func(tx store.Tx) error {
			_, err := tx.CreateDataset(f.ctx, store.NewDataset{Title: "x", Licence: "x", Sensitivity: store.SensitivityPublic, CreatedBy: gone.ID})
			return err
		})
		assert.ErrorIs(t, err, store.ErrForbidden, "a deactivated user cannot create")
		err = f.st.InTx(f.ctx, func(tx store.Tx) error {
			_, err := tx.CreateDataset(f.ctx, store.NewDataset{Title: "x", Licence: "x", Sensitivity: "secret", CreatedBy: alice.ID})
			return err
		})
		assert.Equal(t, "sensitivity", fieldOf(t, err))
	})

	t.Run("evidence files", func(t *testing.T) {
		sum := sha256.Sum256([]byte("evidence"))
		file := func(datasetID int64, by store.User, stored string, size int64) store.NewEvidenceFile {
			return store.NewEvidenceFile{DatasetID: datasetID, OriginalName: "survey.csv", StoredName: stored,
				ContentType: "text/csv", SizeBytes: size, SHA256: sum, UploadedBy: by.ID}
		}
		insert := func(in store.NewEvidenceFile) (store.EvidenceFile, error) {
			var out store.EvidenceFile
			err := f.st.InTx(f.ctx, func(tx store.Tx) (err error) {
				out, err = tx.InsertEvidenceFile(f.ctx, in)
				return err
			})
			return out, err
		}
		saved, err := insert(file(aRestricted.ID, alice, "0123456789abcdef0123.csv", 42))
		require.NoError(t, err)

		tests := []struct {
			name     string
			in       store.NewEvidenceFile
			is       error
			field    string
			conflict string
		}{
			{name: "other organisation's public dataset", in: file(bPublic.ID, alice, "aaaaaaaaaaaaaaaa1", 1), is: store.ErrForbidden},
			{name: "other organisation's restricted dataset", in: file(bRestricted.ID, alice, "aaaaaaaaaaaaaaaa2", 1), is: store.ErrNotFound},
			{name: "missing dataset", in: file(999999, alice, "aaaaaaaaaaaaaaaa3", 1), is: store.ErrNotFound},
			{name: "deactivated uploader", in: file(aPublic.ID, gone, "aaaaaaaaaaaaaaaa4", 1), is: store.ErrNotFound},
			{name: "path traversal name", in: file(aPublic.ID, alice, "../../etc/passwd", 1), field: "stored_name"},
			{name: "hidden file name", in: file(aPublic.ID, alice, ".htaccess-aaaaaaaaaaa", 1), field: "stored_name"},
			{name: "empty file", in: file(aPublic.ID, alice, "aaaaaaaaaaaaaaaa5", 0), field: "size_bytes"},
			{name: "stored name reused", in: file(aPublic.ID, alice, "0123456789abcdef0123.csv", 1), conflict: "stored_name"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := insert(tt.in)
				switch {
				case tt.field != "":
					assert.Equal(t, tt.field, fieldOf(t, err))
				case tt.conflict != "":
					assert.Equal(t, tt.conflict, conflictOf(t, err))
				default:
					assert.ErrorIs(t, err, tt.is)
				}
			})
		}

		files, err := f.st.ListEvidenceFiles(f.ctx, alice.ID, aRestricted.ID)
		require.NoError(t, err)
		require.Len(t, files, 1)
		assert.Equal(t, saved, files[0])
		assert.Equal(t, sum, files[0].SHA256)
		assert.Equal(t, int64(42), files[0].SizeBytes)

		_, err = f.st.ListEvidenceFiles(f.ctx, bob.ID, aRestricted.ID)
		assert.ErrorIs(t, err, store.ErrNotFound, "another organisation cannot list restricted evidence")
	})
}

func TestSites(t *testing.T) {
	f := newFixture(t)
	org := f.org("sites-org")
	u := f.user(org.ID, "ranger", store.RoleStaff)
	create := func(name string, lon, lat float64) (store.Site, error) {
		var s store.Site
		err := f.st.InTx(f.ctx, func(tx store.Tx) (err error) {
			s, err = tx.CreateSite(f.ctx, store.NewSite{Name: name, Lon: lon, Lat: lat, CreatedBy: u.ID})
			return err
		})
		return s, err
	}
	points := []struct {
		name     string
		lon, lat float64
	}{
		{"Kruger", 31.5, -24.0},
		{"Table Mountain", 18.4, -33.96},
		{"Edge", 20, -30}, // on the bbox corner below
		{"Galapagos", -90.5, -0.7},
	}
	var ids []int64
	for _, p := range points {
		s, err := create(p.name, p.lon, p.lat)
		require.NoError(t, err)
		assert.Equal(t, p.lon, s.Lon)
		assert.Equal(t, p.lat, s.Lat)
		assert.Equal(t, org.ID, s.OrganisationID)
		ids = append(ids, s.ID)
	}

	t.Run("invalid coordinates", func(t *testing.T) {
		tests := []struct {
			name     string
			lon, lat float64
			field    string
		}{
			{"NaN longitude", math.NaN(), 0, "lon"},
			{"infinite latitude", 0, math.Inf(-1), "lat"},
			{"longitude past 180", 180.0001, 0, "lon"},
			{"latitude past -90", 0, -90.5, "lat"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := create("bad", tt.lon, tt.lat)
				assert.Equal(t, tt.field, fieldOf(t, err))
			})
		}
		_, err := create("", 1, 1)
		assert.Equal(t, "name", fieldOf(t, err))
	})

	t.Run("list", func(t *testing.T) {
		southAfrica := &store.BBox{MinLon: 16, MinLat: -35, MaxLon: 33, MaxLat: -22}
		tests := []struct {
			name string
			q    store.SiteQuery
			want []int64
		}{
			{"everything", store.SiteQuery{}, ids},
			{"bbox, edges included", store.SiteQuery{BBox: &store.BBox{MinLon: 18, MinLat: -35, MaxLon: 20, MaxLat: -30}}, []int64{ids[1], ids[2]}},
			{"bbox", store.SiteQuery{BBox: southAfrica}, ids[:3]},
			{"bbox with limit", store.SiteQuery{BBox: southAfrica, Limit: 2}, ids[:2]},
			{"next page", store.SiteQuery{BBox: southAfrica, AfterID: ids[1]}, ids[2:3]},
			{"empty area", store.SiteQuery{BBox: &store.BBox{MinLon: 0, MinLat: 0, MaxLon: 1, MaxLat: 1}}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := f.st.ListSites(f.ctx, tt.q)
				require.NoError(t, err)
				var gotIDs []int64
				for _, s := range got {
					gotIDs = append(gotIDs, s.ID)
				}
				assert.Equal(t, tt.want, gotIDs)
			})
		}
	})

	t.Run("invalid bbox", func(t *testing.T) {
		tests := []struct {
			name  string
			box   store.BBox
			field string
		}{
			{"min above max", store.BBox{MinLon: 10, MinLat: 0, MaxLon: 5, MaxLat: 1}, "bbox"},
			{"NaN", store.BBox{MinLon: math.NaN(), MaxLon: 1, MaxLat: 1}, "bbox.min_lon"},
			{"off the globe", store.BBox{MinLon: 0, MinLat: 0, MaxLon: 1, MaxLat: 91}, "bbox.max_lat"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := f.st.ListSites(f.ctx, store.SiteQuery{BBox: &tt.box})
				assert.Equal(t, tt.field, fieldOf(t, err))
			})
		}
	})

	t.Run("the bbox predicate can use the GiST index", func(t *testing.T) {
		// The same predicate shape as ListSites. The planner prefers a
		// sequential scan on four rows; forbidding it shows the index serves
		// && with ST_MakeEnvelope.
		var plan string
		conn, err := f.pool.Acquire(f.ctx)
		require.NoError(t, err)
		defer conn.Release()
		_, err = conn.Exec(f.ctx, `SET enable_seqscan = off`)
		require.NoError(t, err)
		defer func() { _, _ = conn.Exec(f.ctx, `RESET enable_seqscan`) }()
		rows, err := conn.Query(f.ctx, `EXPLAIN SELECT id FROM monitoring_sites
			WHERE id > 0 AND geom && ST_MakeEnvelope(16, -35, 33, -22, 4326) ORDER BY id LIMIT 10`)
		require.NoError(t, err)
		for rows.Next() {
			var line string
			require.NoError(t, rows.Scan(&line))
			plan += line + "\n"
		}
		require.NoError(t, rows.Err())
		assert.Contains(t, plan, "monitoring_sites_geom_idx")
	})
}
