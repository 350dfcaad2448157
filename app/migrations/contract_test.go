package migrations_test

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/migrations"
)

// TestMigrationsAreExpandContractSafe is the guard: every migration in this
// package must leave the schema the previous release uses intact, because a
// blue/green deploy runs it while that release still serves. Read
// docs/migrations.md before silencing it.
func TestMigrationsAreExpandContractSafe(t *testing.T) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names, "the embedded migrations are there to check")

	violations, err := migrations.CheckExpandContract(migrations.FS)
	require.NoError(t, err)
	for _, v := range violations {
		t.Errorf("%s", v)
	}
}

// TestCheckReadsTheRealFiles proves the guard above is live on the real
// files: the same files with a DROP COLUMN put at the top of their Up
// section each fail, on the right line.
func TestCheckReadsTheRealFiles(t *testing.T) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, name := range names {
		data, err := fs.ReadFile(migrations.FS, name)
		require.NoError(t, err)
		lines := strings.Split(string(data), "\n")
		up := -1
		for i, l := range lines {
			if strings.TrimSpace(l) == "-- +goose Up" {
				up = i
			}
		}
		require.GreaterOrEqual(t, up, 0, "%s has an Up section", name)
		injected := append(append(append([]string{}, lines[:up+1]...), "ALTER TABLE users DROP COLUMN role;"), lines[up+1:]...)

		got, err := migrations.CheckExpandContract(fstest.MapFS{name: {Data: []byte(strings.Join(injected, "\n"))}})
		require.NoError(t, err)
		if assert.Len(t, got, 1, name) {
			assert.Equal(t, name, got[0].File)
			assert.Equal(t, up+2, got[0].Line, name)
			assert.Equal(t, "users.role", got[0].Object)
		}
	}
}

// contractCases are migrations (Up and Down as written) and the violations
// they must produce, as "line object"; none means the file passes.
var contractCases = []struct {
	name string
	sql  string
	want []string
}{
	// --- refused -----------------------------------------------------------
	{
		name: "drop column",
		sql: `-- +goose Up
ALTER TABLE indicators DROP COLUMN legacy_code;`,
		want: []string{"2 indicators.legacy_code"},
	},
	{
		name: "drop without COLUMN",
		sql: `-- +goose Up
ALTER TABLE indicators DROP legacy_code RESTRICT;`,
		want: []string{"2 indicators.legacy_code"},
	},
	{
		name: "drop column multi-line, mixed case, IF EXISTS, ONLY, schema-qualified",
		sql: `-- +goose Up
alter TABLE If Exists ONLY
    public.Indicators
    Drop
      Column IF EXISTS Legacy_Code CASCADE;`,
		want: []string{"4 public.indicators.legacy_code"},
	},
	{
		name: "drop column quoted",
		sql: `-- +goose Up
ALTER TABLE "Indicators" DROP COLUMN "Legacy Code";
ALTER TABLE "public"."indicators" DROP COLUMN "unit";`,
		want: []string{`2 "Indicators"."Legacy Code"`, "3 public.indicators.unit"},
	},
	{
		name: "one of several actions",
		sql: `-- +goose Up
ALTER TABLE indicators
    ADD COLUMN notes text,
    ADD CONSTRAINT indicators_unit_check CHECK (unit IN ('a', 'b')),
    DROP COLUMN unit,
    ALTER COLUMN version TYPE numeric(10, 2),
    ALTER COLUMN title SET DEFAULT '';`,
		want: []string{"5 indicators.unit", "6 indicators.version"},
	},
	{
		name: "rename column",
		sql: `-- +goose Up
ALTER TABLE indicators RENAME COLUMN code TO slug;
ALTER TABLE IF EXISTS datasets RENAME licence TO license;`,
		want: []string{"2 indicators.code", "3 datasets.licence"},
	},
	{
		name: "rename table and move it to another schema",
		sql: `-- +goose Up
ALTER TABLE indicators RENAME TO metrics;
ALTER TABLE IF EXISTS public.datasets
    SET SCHEMA archive;`,
		want: []string{"2 indicators", "4 public.datasets"},
	},
	{
		name: "drop table, several names",
		sql: `-- +goose Up
DROP TABLE IF EXISTS public.evidence_files,
    datasets CASCADE;
drop table "Monitoring Sites";`,
		want: []string{"2 public.evidence_files", "3 datasets", `4 "Monitoring Sites"`},
	},
	{
		name: "type change",
		sql: `-- +goose Up
ALTER TABLE indicators ALTER COLUMN version TYPE bigint USING version::bigint;
ALTER TABLE indicators ALTER version SET DATA TYPE bigint;`,
		want: []string{"2 indicators.version", "3 indicators.version"},
	},
	{
		name: "set not null on an existing column",
		sql: `-- +goose Up
ALTER TABLE users ALTER COLUMN display_name SET NOT NULL;`,
		want: []string{"2 users.display_name"},
	},
	{
		name: "add a NOT NULL column without a default",
		sql: `-- +goose Up
ALTER TABLE users ADD COLUMN locale text NOT NULL;
ALTER TABLE users ADD badge_id bigint PRIMARY KEY;`,
		want: []string{"2 users.locale", "3 users.badge_id"},
	},
	{
		name: "views",
		sql: `-- +goose Up
DROP VIEW IF EXISTS published_indicators;
DROP MATERIALIZED VIEW indicator_totals;
ALTER VIEW public_sites RENAME COLUMN geom TO location;
ALTER MATERIALIZED VIEW site_counts RENAME TO site_totals;`,
		want: []string{"2 published_indicators", "3 indicator_totals", "4 public_sites.geom", "5 site_counts"},
	},
	{
		name: "inside StatementBegin/End",
		sql: `-- +goose Up
-- +goose StatementBegin
ALTER TABLE indicators DROP COLUMN unit;
-- +goose StatementEnd`,
		want: []string{"3 indicators.unit"},
	},
	{
		name: "inside a DO block, which runs now",
		sql: `-- +goose Up
-- +goose StatementBegin
DO $body$
BEGIN
    IF EXISTS (SELECT 1 FROM indicators WHERE unit = '') THEN
        ALTER TABLE indicators DROP COLUMN unit;
    END IF;
END
$body$;
-- +goose StatementEnd`,
		want: []string{"6 indicators.unit"},
	},
	{
		name: "after a string holding a semicolon, on the same line",
		sql: `-- +goose Up
UPDATE indicators SET title = 'a; b'; ALTER TABLE indicators DROP COLUMN unit;`,
		want: []string{"2 indicators.unit"},
	},
	{
		name: "Up annotation in another case",
		sql: `--   +goose up
DROP TABLE sessions;`,
		want: []string{"2 sessions"},
	},

	// --- not refused: comments, strings, bodies, the Down section ----------
	{
		name: "comments and strings mentioning the forms",
		sql: `-- The next release may DROP COLUMN unit; ALTER TABLE indicators DROP COLUMN unit;
-- +goose Up
-- ALTER TABLE indicators DROP COLUMN unit;
/* DROP TABLE indicators;
   /* nested */ ALTER TABLE indicators RENAME TO x; */
COMMENT ON COLUMN indicators.unit IS 'ALTER TABLE indicators DROP COLUMN unit; in 00009';
INSERT INTO notes (body) VALUES ('it''s; DROP TABLE indicators'), (E'it\'s; DROP TABLE users');
ALTER TABLE indicators ADD COLUMN "drop column unit" text; -- DROP TABLE users;`,
	},
	{
		name: "function bodies are not run by the migration",
		sql: `-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION purge_legacy() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    DROP TABLE legacy;
END;
$fn$;
-- +goose StatementEnd`,
	},
	{
		name: "the Down section is ignored",
		sql: `-- +goose Up
ALTER TABLE indicators ADD COLUMN notes text;

-- +goose Down
ALTER TABLE indicators DROP COLUMN notes;
DROP TABLE indicators;`,
	},
	{
		name: "expanding",
		sql: `-- +goose Up
-- +goose NO TRANSACTION
CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);
CREATE INDEX CONCURRENTLY IF NOT EXISTS indicators_unit_idx ON indicators (unit);
ALTER TABLE indicators ADD COLUMN notes text;
ALTER TABLE indicators ADD COLUMN flagged boolean NOT NULL DEFAULT false;
ALTER TABLE indicators ADD COLUMN serial bigint NOT NULL GENERATED ALWAYS AS IDENTITY;
ALTER TABLE indicators ADD COLUMN checked text CHECK (checked IS NOT NULL);
ALTER TABLE indicators ADD CONSTRAINT indicators_unit_nn CHECK (unit IS NOT NULL) NOT VALID;
ALTER TABLE indicators VALIDATE CONSTRAINT indicators_unit_nn;
ALTER TABLE indicators ALTER COLUMN unit DROP NOT NULL, ALTER COLUMN unit SET DEFAULT 'n/a';
ALTER TABLE indicators DROP CONSTRAINT IF EXISTS indicators_old_check;
ALTER TABLE indicators RENAME CONSTRAINT indicators_a TO indicators_b;
DROP INDEX IF EXISTS indicators_old_idx;
CREATE OR REPLACE VIEW published AS SELECT id FROM indicators WHERE published;`,
	},

	// --- objects created earlier in the same file --------------------------
	{
		name: "a table created in the file",
		sql: `-- +goose Up
CREATE TABLE staging (id bigint, code text, n int);
ALTER TABLE staging DROP COLUMN code, ALTER COLUMN n TYPE bigint, ALTER COLUMN n SET NOT NULL;
ALTER TABLE staging ADD COLUMN total bigint NOT NULL;
ALTER TABLE staging RENAME COLUMN id TO staging_id;
ALTER TABLE staging RENAME TO staged;
DROP TABLE staged;
CREATE TEMP TABLE scratch (x int);
DROP TABLE scratch;
CREATE MATERIALIZED VIEW totals AS SELECT 1;
DROP MATERIALIZED VIEW totals;`,
	},
	{
		name: "a column added in the file",
		sql: `-- +goose Up
ALTER TABLE indicators ADD COLUMN slug text;
UPDATE indicators SET slug = lower(code);
ALTER TABLE indicators ALTER COLUMN slug TYPE varchar(64);
ALTER TABLE indicators RENAME COLUMN slug TO handle;
ALTER TABLE indicators DROP COLUMN handle;
ALTER TABLE indicators ADD COLUMN weight int DEFAULT 1;
ALTER TABLE indicators ALTER COLUMN weight SET NOT NULL;`,
	},
	{
		name: "only what was created earlier in the file",
		sql: `-- +goose Up
DROP TABLE staging;
CREATE TABLE staging (id bigint);`,
		want: []string{"2 staging"},
	},
	{
		name: "IF NOT EXISTS and OR REPLACE prove nothing new",
		sql: `-- +goose Up
CREATE TABLE IF NOT EXISTS indicators (id bigint);
ALTER TABLE indicators DROP COLUMN unit;
ALTER TABLE users ADD COLUMN IF NOT EXISTS locale text;
ALTER TABLE users DROP COLUMN locale;
CREATE OR REPLACE VIEW published AS SELECT id FROM indicators;
DROP VIEW published;`,
		want: []string{"3 indicators.unit", "5 users.locale", "7 published"},
	},
	{
		name: "a column added without a default, then NOT NULL: the running version inserts without it",
		sql: `-- +goose Up
ALTER TABLE users ADD COLUMN locale text;
UPDATE users SET locale = 'en';
ALTER TABLE users ALTER COLUMN locale SET NOT NULL;`,
		want: []string{"4 users.locale"},
	},

	// --- the escape hatch --------------------------------------------------
	{
		name: "annotated step is allowed",
		sql: `-- +goose Up
-- nbms:contract indicators.legacy_code -- read by no version since 00007
ALTER TABLE indicators DROP COLUMN legacy_code;`,
	},
	{
		name: "annotation allows exactly the named object",
		sql: `-- +goose Up
-- nbms:contract indicators.legacy_code -- read by no version since 00007
ALTER TABLE indicators DROP COLUMN legacy_code, DROP COLUMN unit;
ALTER TABLE indicators ALTER COLUMN legacy_code2 TYPE text;
DROP TABLE indicators;`,
		want: []string{"3 indicators.unit", "4 indicators.legacy_code2", "5 indicators"},
	},
	{
		name: "annotations in any case, for tables, quoted and qualified names, in a DO block",
		sql: `-- +goose Up
--NBMS:CONTRACT legacy_codes -- replaced by indicators.code in 00005
DROP TABLE legacy_codes;
-- nbms:contract "Indicators"."Legacy Code" -- unused since 00008
ALTER TABLE "Indicators" DROP COLUMN "Legacy Code";
ALTER TABLE public.datasets RENAME COLUMN licence TO license; -- nbms:contract public.datasets.licence -- 00009 reads license only
-- +goose StatementBegin
DO $$
BEGIN
    -- nbms:contract users.display_name -- every release since 00010 writes it
    ALTER TABLE users ALTER COLUMN display_name SET NOT NULL;
END
$$;
-- +goose StatementEnd`,
	},
	{
		name: "a table annotation does not cover its columns",
		sql: `-- +goose Up
-- nbms:contract indicators -- no longer read
ALTER TABLE indicators DROP COLUMN unit;`,
		want: []string{"2 indicators", "3 indicators.unit"},
	},
	{
		name: "the schema must be named as the statement names it",
		sql: `-- +goose Up
-- nbms:contract indicators.unit -- no longer read
ALTER TABLE public.indicators DROP COLUMN unit;`,
		want: []string{"2 indicators.unit", "3 public.indicators.unit"},
	},
	{
		name: "annotation without a reason",
		sql: `-- +goose Up
-- nbms:contract indicators.legacy_code
-- nbms:contract indicators.unit --   
ALTER TABLE indicators DROP COLUMN legacy_code, DROP COLUMN unit;`,
		want: []string{"2 indicators.legacy_code", "3 indicators.unit"},
	},
	{
		name: "stale annotation names nothing the file contracts",
		sql: `-- +goose Up
-- nbms:contract indicators.legacy_code -- read by no version since 00007
ALTER TABLE indicators ADD COLUMN notes text;`,
		want: []string{"2 indicators.legacy_code"},
	},
	{
		name: "annotation on an object created in the file is stale",
		sql: `-- +goose Up
-- nbms:contract staging -- scratch table
CREATE TABLE staging (id bigint);
DROP TABLE staging;`,
		want: []string{"2 staging"},
	},
	{
		name: "malformed annotations",
		sql: `-- +goose Up
-- nbms:contract -- no object
-- nbms:contract indicators.unit datasets.licence -- two objects
-- nbms:contract a.b.c.d -- too deep
ALTER TABLE indicators ADD COLUMN notes text;`,
		want: []string{"2 ", "3 ", "4 "},
	},
	{
		name: "annotation outside the Up section",
		sql: `-- nbms:contract indicators.unit -- in the header
-- +goose Up
ALTER TABLE indicators DROP COLUMN unit;
-- +goose Down
-- nbms:contract indicators.notes -- in the Down section
ALTER TABLE indicators ADD COLUMN unit text;`,
		want: []string{"1 ", "3 indicators.unit", "5 "},
	},
	{
		name: "annotation in a block comment is not one",
		sql: `-- +goose Up
/* -- nbms:contract indicators.unit -- hidden */
ALTER TABLE indicators DROP COLUMN unit;`,
		want: []string{"3 indicators.unit"},
	},
	{
		name: "no Up annotation",
		sql:  `ALTER TABLE indicators DROP COLUMN unit;`,
		want: []string{"1 "},
	},
}

func TestCheckExpandContract(t *testing.T) {
	for _, tt := range contractCases {
		t.Run(tt.name, func(t *testing.T) {
			const file = "00007_change.sql"
			got, err := migrations.CheckExpandContract(fstest.MapFS{file: {Data: []byte(tt.sql)}})
			require.NoError(t, err)
			var summary []string
			for _, v := range got {
				assert.Equal(t, file, v.File)
				assert.NotEmpty(t, v.Message)
				assert.NotEmpty(t, v.Statement)
				summary = append(summary, fmt.Sprintf("%d %s", v.Line, v.Object))
			}
			if len(tt.want) == 0 {
				assert.Empty(t, got, "expected no violation")
				return
			}
			assert.Equal(t, tt.want, summary, "violations:\n%s", violationList(got))
		})
	}
}

func violationList(vs []migrations.Violation) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(v.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestViolationTellsWhatToDo checks what an author reads: where, what, and
// the two ways out.
func TestViolationTellsWhatToDo(t *testing.T) {
	long := "ALTER TABLE indicators " + strings.Repeat("ADD COLUMN c text, ", 10) + "DROP COLUMN legacy_code;"
	got, err := migrations.CheckExpandContract(fstest.MapFS{
		"00009_b.sql": {Data: []byte("-- +goose Up\n-- nbms:contract users -- gone\n")},
		"00008_a.sql": {Data: []byte("-- +goose Up\n\n" + long + "\n")},
		"README.md":   {Data: []byte("DROP TABLE users;")},
	})
	require.NoError(t, err)
	require.Len(t, got, 2, violationList(got))

	v := got[0]
	assert.Equal(t, "00008_a.sql", v.File, "files in order")
	assert.Equal(t, 3, v.Line)
	assert.Equal(t, "indicators.legacy_code", v.Object)
	assert.Contains(t, v.Message, "drops column indicators.legacy_code")
	assert.Contains(t, v.Message, "drop it in a later one")
	assert.Contains(t, v.Message, "-- nbms:contract indicators.legacy_code -- <reason>")
	assert.True(t, strings.HasPrefix(v.Statement, "ALTER TABLE indicators ADD COLUMN c text, ADD"), v.Statement)
	assert.True(t, strings.HasSuffix(v.Statement, "…"), v.Statement)
	assert.Equal(t, 100, len([]rune(v.Statement)))
	assert.Equal(t, "00008_a.sql:3: "+v.Message+"\n\t"+v.Statement, v.String())

	stale := got[1]
	assert.Equal(t, "00009_b.sql", stale.File)
	assert.Equal(t, 2, stale.Line)
	assert.Equal(t, "-- nbms:contract users -- gone", stale.Statement)
	assert.Contains(t, stale.Message, "stale")
}

func TestViolationMessagesPerStep(t *testing.T) {
	tests := []struct{ sql, want string }{
		{"ALTER TABLE t RENAME COLUMN a TO b;", "add the new column, write both and backfill"},
		{"ALTER TABLE t RENAME TO u;", "renames table t"},
		{"ALTER TABLE t SET SCHEMA s;", "moves table t to another schema"},
		{"ALTER TABLE t ALTER a TYPE int;", "add a column of the new type"},
		{"ALTER TABLE t ALTER a SET NOT NULL;", "release code that always writes it"},
		{"ALTER TABLE t ADD a int NOT NULL;", "add it nullable or with a DEFAULT"},
		{"DROP VIEW v;", "drops view v"},
		{"DROP TABLE t;", "drops table t"},
	}
	for _, tt := range tests {
		got, err := migrations.CheckExpandContract(fstest.MapFS{"1.sql": {Data: []byte("-- +goose Up\n" + tt.sql)}})
		require.NoError(t, err)
		if assert.Len(t, got, 1, tt.sql) {
			assert.Contains(t, got[0].Message, tt.want, tt.sql)
			assert.Contains(t, got[0].Message, "-- nbms:contract "+got[0].Object+" -- <reason>", tt.sql)
		}
	}
}
