package store

import (
	"context"
	"time"
)

// Event is what an audit record says: who did what to which object, during
// which request.
type Event struct {
	ActorUserID int64  // 0 when there is no signed-in actor (e.g. a failed login)
	Action      string // e.g. "indicator.update"
	ObjectType  string // e.g. "indicator"
	ObjectID    string // e.g. the indicator code
	RequestID   string
	// Details holds extra facts (e.g. changed field names). Never put
	// secrets or passwords here: the log cannot be edited afterwards.
	Details map[string]any
}

// AuditEvent is a stored Event.
type AuditEvent struct {
	ID         int64
	OccurredAt time.Time // the transaction's start time
	Event
}

// AuditQuery pages through audit events newest first.
type AuditQuery struct {
	BeforeID int64 // 0 for the first page; else the last ID of the previous page
	Limit    int   // see DefaultLimit
}

// InsertAuditEvent appends e to the audit log inside tx, so it commits or
// rolls back with the write it records. The table refuses UPDATE, DELETE and
// TRUNCATE (a trigger), so the record is permanent once committed.
func (tx Tx) InsertAuditEvent(ctx context.Context, e Event) (int64, error) {
	details := e.Details
	if details == nil {
		details = map[string]any{} // nil would be stored as JSON null
	}
	var id int64
	err := tx.tx.QueryRow(ctx,
		`INSERT INTO audit_events (actor_user_id, action, object_type, object_id, request_id, details)
		 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		nullID(e.ActorUserID), e.Action, e.ObjectType, e.ObjectID, e.RequestID, details).Scan(&id)
	if err != nil {
		return 0, mapErr("insert audit event", err)
	}
	return id, nil
}

// ListAuditEvents returns a page of audit events, newest first.
func (s *Store) ListAuditEvents(ctx context.Context, q AuditQuery) ([]AuditEvent, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, occurred_at, actor_user_id, action, object_type, object_id, request_id, details
		 FROM audit_events
		 WHERE $1::bigint = 0 OR id < $1::bigint
		 ORDER BY id DESC
		 LIMIT $2`,
		q.BeforeID, clamp(q.Limit, DefaultLimit, MaxLimit))
	if err != nil {
		return nil, mapErr("list audit events", err)
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var (
			ev    AuditEvent
			actor *int64
		)
		if err := rows.Scan(&ev.ID, &ev.OccurredAt, &actor, &ev.Action, &ev.ObjectType, &ev.ObjectID,
			&ev.RequestID, &ev.Details); err != nil {
			return nil, mapErr("list audit events", err)
		}
		ev.ActorUserID = idValue(actor)
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("list audit events", err)
	}
	return out, nil
}
