package api

import (
	"net/http"
	"time"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

type auditEventJSON struct {
	ID          int64          `json:"id"`
	OccurredAt  time.Time      `json:"occurred_at"`
	ActorUserID *int64         `json:"actor_user_id"` // null: no signed-in actor
	Action      string         `json:"action"`
	ObjectType  string         `json:"object_type"`
	ObjectID    string         `json:"object_id"`
	RequestID   string         `json:"request_id"`
	Details     map[string]any `json:"details"`
}

// listAudit answers GET /api/audit (admins): the audit log, newest first.
func (a *api) listAudit(w http.ResponseWriter, r *http.Request) {
	if _, ok := requireRole(w, r, admins); !ok {
		return
	}
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	fields := map[string]string{}
	page := parsePage(q, auditCursor, listPageSize, fields)
	if len(fields) > 0 {
		writeFieldErrors(w, fields)
		return
	}
	events, err := a.Store.ListAuditEvents(r.Context(), store.AuditQuery{BeforeID: page.cursor.ID, Limit: page.limit})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	out := listJSON[auditEventJSON]{Items: make([]auditEventJSON, 0, len(events))}
	for _, e := range events {
		ev := auditEventJSON{
			ID: e.ID, OccurredAt: e.OccurredAt.UTC(), Action: e.Action, ObjectType: e.ObjectType,
			ObjectID: e.ObjectID, RequestID: e.RequestID, Details: e.Details,
		}
		if e.ActorUserID != 0 {
			ev.ActorUserID = &e.ActorUserID
		}
		if ev.Details == nil {
			ev.Details = map[string]any{}
		}
		out.Items = append(out.Items, ev)
	}
	if len(events) == page.limit {
		out.Next = encodeCursor(cursor{Kind: auditCursor, ID: events[len(events)-1].ID})
	}
	a.writeJSON(w, r, http.StatusOK, jsonType, out)
}
