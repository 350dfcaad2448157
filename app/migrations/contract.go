package migrations

import (
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
)

// Violation is one migration statement (or escape-hatch annotation) that
// the expand/contract rule refuses.
type Violation struct {
	File      string // the migration's file name, e.g. "00007_indicators_code.sql"
	Line      int    // 1-based line in the file
	Statement string // the statement or annotation, shortened
	Object    string // the table or table.column concerned; "" when none
	Message   string // what is wrong and what to do about it
}

// String formats the violation as file:line: message, then the statement.
func (v Violation) String() string {
	s := fmt.Sprintf("%s:%d: %s", v.File, v.Line, v.Message)
	if v.Statement != "" {
		s += "\n\t" + v.Statement
	}
	return s
}

// CheckExpandContract reads every *.sql migration at the root of fsys and
// returns the violations of the expand/contract rule, ordered by file and
// line. An error means a file could not be read, not that one is unsafe.
//
// The rule (docs/migrations.md): a blue/green deploy runs a release's
// migrations while the previous release still serves from the same
// database, so a migration must leave the schema that release uses intact.
// The check refuses the statements that do not:
//
//   - DROP TABLE, DROP VIEW, DROP MATERIALIZED VIEW;
//   - ALTER TABLE|VIEW|MATERIALIZED VIEW ... RENAME TO or SET SCHEMA;
//   - ALTER TABLE ... DROP [COLUMN], RENAME [COLUMN];
//   - ALTER TABLE ... ALTER [COLUMN] ... TYPE or SET DATA TYPE;
//   - ALTER TABLE ... ALTER [COLUMN] ... SET NOT NULL;
//   - ALTER TABLE ... ADD [COLUMN] ... NOT NULL (or PRIMARY KEY) without a
//     DEFAULT: the running version's INSERTs do not set the column.
//
// Only the Up section is read (goose's annotations are recognised as goose
// does). Comments, string literals and dollar-quoted bodies are skipped,
// except the body of a DO block, which runs now and is read too. Dynamic SQL
// (EXECUTE '...') and functions called by the migration are not followed.
//
// A statement on a table or view created earlier in the same file is
// allowed (no running version knows it), and so is dropping, renaming or
// retyping a column added earlier in the same file. CREATE TABLE IF NOT
// EXISTS, CREATE OR REPLACE VIEW and ADD COLUMN IF NOT EXISTS do not count:
// the object may well predate the file. Making a column added in the same
// file NOT NULL is allowed only when it was added with a DEFAULT, since the
// running version inserts rows without it.
//
// The escape hatch is a line comment in the Up section naming the object as
// the statement writes it (schema included if the statement gives one),
// with the reason no running version uses it any more:
//
//	-- nbms:contract indicators.legacy_code -- read by no version since 00007
//
// It allows contract steps on exactly that object. An annotation without a
// reason, one that names nothing the file contracts, or one outside the Up
// section is itself a violation.
func CheckExpandContract(fsys fs.FS) ([]Violation, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	var out []Violation
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		out = append(out, checkFile(name, string(data))...)
	}
	return out, nil
}

const (
	annotationSyntax = "-- nbms:contract <table or table.column> -- <reason>"
	maxStatement     = 100 // runes of a statement quoted in a Violation
)

// contractRE matches the escape hatch in a line comment's text (after "--").
var contractRE = regexp.MustCompile(`(?i)^\s*nbms:contract(?:\s+(.*))?$`)

// ---------------------------------------------------------------------------
// One file.

type fileCheck struct {
	file    string
	created map[string]bool   // tables and views created earlier in the file
	added   map[string]*added // table\x00column added earlier to an existing table
	steps   []step
	hatches []hatch
	out     []Violation
}

type added struct{ hasDefault bool }

// step is a contract step the file takes on an object it did not create.
type step struct {
	kind   stepKind
	rel    string // "table", "view" or "materialized view"
	object string
	line   int
	stmt   string
}

// hatch is a parsed nbms:contract annotation.
type hatch struct {
	object string // "" when the annotation could not be parsed
	line   int
	text   string
	used   bool
}

func checkFile(name, src string) []Violation {
	c := &fileCheck{file: name, created: map[string]bool{}, added: map[string]*added{}}
	up, found, stray := upSection(src)
	if !found {
		first, _, _ := strings.Cut(strings.TrimSpace(src), "\n")
		return []Violation{{File: name, Line: 1, Statement: shorten(first),
			Message: "no '-- +goose Up' annotation: goose cannot run this file and the expand/contract check cannot read it"}}
	}
	for _, l := range stray {
		c.out = append(c.out, Violation{File: name, Line: l.line, Statement: shorten(l.text),
			Message: "nbms:contract annotation outside the Up section: it allows nothing there; move it into the Up section"})
	}
	toks, comments := lex(up, 1)
	c.annotations(comments)
	for _, st := range splitStatements(up, toks) {
		if st.word(0) == "do" {
			c.doBlock(st)
			continue
		}
		c.statement(st)
	}
	c.settle()
	slices.SortStableFunc(c.out, func(a, b Violation) int { return a.Line - b.Line })
	return c.out
}

// upSection returns src with every line outside the Up section blanked
// (line numbers stay), whether there was an Up annotation, and the
// nbms:contract annotations found outside it. Annotations are recognised as
// goose's parser does: a line starting with "--" that contains "+goose".
func upSection(src string) (string, bool, []sourceLine) {
	lines := strings.Split(src, "\n")
	var (
		inUp, found bool
		stray       []sourceLine
	)
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") && strings.Contains(line, "+goose") {
			cmd := strings.Replace(strings.ReplaceAll(line, "--", ""), "+goose", "", 1)
			switch {
			case strings.EqualFold(strings.TrimSpace(cmd), "up"):
				inUp, found = true, true
			case strings.EqualFold(strings.TrimSpace(cmd), "down"):
				inUp = false
			}
			lines[i] = ""
			continue
		}
		if !inUp {
			if _, after, ok := strings.Cut(line, "--"); ok && contractRE.MatchString(after) {
				stray = append(stray, sourceLine{line: i + 1, text: trimmed})
			}
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n"), found, stray
}

type sourceLine struct {
	line int
	text string
}

func (c *fileCheck) annotations(comments []comment) {
	for _, cm := range comments {
		m := contractRE.FindStringSubmatch(cm.text)
		if m == nil {
			continue
		}
		text := "--" + strings.TrimRight(cm.text, " \t\r")
		objText, reason, _ := strings.Cut(m[1], "--")
		h := hatch{line: cm.line, text: text}
		parts, ok := parseName(objText)
		if !ok || len(parts) > 3 {
			c.out = append(c.out, Violation{File: c.file, Line: cm.line, Statement: shorten(text),
				Message: "malformed nbms:contract annotation: name one table or table.column, as the statement writes it: " + annotationSyntax})
			continue
		}
		h.object = formatName(parts)
		if strings.TrimSpace(reason) == "" {
			c.out = append(c.out, Violation{File: c.file, Line: cm.line, Statement: shorten(text), Object: h.object,
				Message: "nbms:contract annotation without a reason: say why no running version reads or writes " + h.object + ": " + annotationSyntax})
		}
		c.hatches = append(c.hatches, h)
	}
}

// settle matches the contract steps with the annotations: an annotated step
// is allowed, an unannotated one is a violation, and so is an annotation
// that allows nothing.
func (c *fileCheck) settle() {
	for _, s := range c.steps {
		allowed := false
		for i := range c.hatches {
			if c.hatches[i].object == s.object {
				c.hatches[i].used, allowed = true, true
			}
		}
		if !allowed {
			c.out = append(c.out, Violation{File: c.file, Line: s.line, Statement: s.stmt, Object: s.object, Message: s.message()})
		}
	}
	for _, h := range c.hatches {
		if !h.used {
			c.out = append(c.out, Violation{File: c.file, Line: h.line, Statement: shorten(h.text), Object: h.object,
				Message: fmt.Sprintf("stale nbms:contract annotation: no statement in this Up section takes a contract step on %s "+
					"(name it exactly as the statement does, schema included if it has one), so remove the annotation or correct the name", h.object)})
		}
	}
}

// ---------------------------------------------------------------------------
// Statements.

type stepKind int

const (
	dropRelation stepKind = iota
	renameRelation
	moveRelation
	dropColumn
	renameColumn
	retypeColumn
	setNotNull
	addNotNullColumn
)

func (s step) message() string {
	does, expand, when := "", "", "no running version uses it any more"
	switch s.kind {
	case dropRelation:
		does = "drops " + s.rel + " " + s.object
		expand = "stop using it in one release, drop it in a later one"
	case renameRelation, moveRelation:
		does = "renames " + s.rel + " " + s.object
		if s.kind == moveRelation {
			does = "moves " + s.rel + " " + s.object + " to another schema"
		}
		expand = "create the new " + s.rel + " and write both (or keep a view under the old name), " +
			"move the code to the new one, drop the old one in a later release"
	case dropColumn:
		does = "drops column " + s.object
		expand = "stop reading and writing it in one release, drop it in a later one"
	case renameColumn:
		does = "renames column " + s.object
		expand = "add the new column, write both and backfill, read the new one in the next release, " +
			"drop the old one in a later release"
	case retypeColumn:
		does = "changes the type of column " + s.object
		expand = "add a column of the new type, write both and backfill, read the new one in the next release, " +
			"drop the old one in a later release"
	case setNotNull:
		does = "makes column " + s.object + " NOT NULL"
		expand = "release code that always writes it and backfill, then set NOT NULL in a later release"
		when = "every running version already writes it"
	case addNotNullColumn:
		does = "adds column " + s.object + " NOT NULL without a DEFAULT"
		expand = "add it nullable or with a DEFAULT, since the running version's INSERTs do not set it; " +
			"set NOT NULL in a later release"
		when = "every running version already sets it"
	}
	return fmt.Sprintf("%s, which breaks the version still serving (a blue/green deploy migrates first). "+
		"Expand now, contract later: %s. If %s, "+
		"name it in the Up section: -- nbms:contract %s -- <reason>", does, expand, when, s.object)
}

// doBlock reads the body of a DO statement, which runs in the migration.
// Its statements may follow BEGIN, THEN and the like, so each piece is
// searched for a statement the check knows rather than read from its start.
func (c *fileCheck) doBlock(st statement) {
	for _, t := range st.toks {
		if t.kind != tokDollar && t.kind != tokString {
			continue
		}
		toks, comments := lex(t.text, t.line)
		c.annotations(comments)
		for _, piece := range splitStatements(t.text, toks) {
			for i := range piece.toks {
				if c.statement(statement{src: piece.src, toks: piece.toks[i:]}) {
					break
				}
			}
		}
		return
	}
}

// statement records what a statement creates and the contract steps it
// takes. It reports whether it recognised the statement.
func (c *fileCheck) statement(st statement) bool {
	cur := &cursor{toks: st.toks}
	switch {
	case cur.accept("create"):
		return c.create(cur)
	case cur.accept("drop"):
		return c.drop(cur, st)
	case cur.accept("alter"):
		return c.alter(cur, st)
	}
	return false
}

func (c *fileCheck) create(cur *cursor) bool {
	replace := cur.accept("or", "replace")
	for cur.accept("global") || cur.accept("local") || cur.accept("temp") || cur.accept("temporary") ||
		cur.accept("unlogged") || cur.accept("recursive") {
	}
	if !cur.accept("table") && !cur.accept("view") && !cur.accept("materialized", "view") {
		return false
	}
	ifNotExists := cur.accept("if", "not", "exists")
	name, ok := cur.name()
	if ok && !replace && !ifNotExists {
		c.created[name] = true
	}
	return true
}

func (c *fileCheck) drop(cur *cursor, st statement) bool {
	rel := relation(cur)
	if rel == "" {
		return false
	}
	cur.accept("if", "exists")
	for {
		line := cur.line()
		name, ok := cur.name()
		if !ok {
			break
		}
		if !c.created[name] {
			c.steps = append(c.steps, step{kind: dropRelation, rel: rel, object: name, line: line, stmt: st.display()})
		}
		if !cur.acceptPunct(",") {
			break
		}
	}
	return true
}

func (c *fileCheck) alter(cur *cursor, st statement) bool {
	rel := relation(cur)
	if rel == "" {
		return false
	}
	cur.accept("if", "exists")
	cur.accept("only")
	table, ok := cur.name()
	if !ok {
		return true
	}
	cur.acceptPunct("*")
	newTable := c.created[table]
	add := func(kind stepKind, object string, line int) {
		c.steps = append(c.steps, step{kind: kind, rel: rel, object: object, line: line, stmt: st.display()})
	}
	column := func(col string) string { return table + "." + formatName([]string{col}) }

	line := cur.line()
	switch {
	case cur.accept("rename", "constraint"):
		return true
	case cur.accept("rename", "to"):
		if to, ok := cur.name(); ok && newTable {
			c.created[to] = true
		}
		if !newTable {
			add(renameRelation, table, line)
		}
		return true
	case cur.accept("set", "schema"):
		if !newTable {
			add(moveRelation, table, line)
		}
		return true
	case cur.accept("rename"):
		cur.accept("column")
		col, ok := cur.ident()
		if !ok {
			return true
		}
		a := c.added[table+"\x00"+col]
		if cur.accept("to") {
			if to, ok := cur.ident(); ok && a != nil {
				c.added[table+"\x00"+to] = a
			}
		}
		if !newTable && a == nil {
			add(renameColumn, column(col), line)
		}
		return true
	}

	for _, action := range cur.actions() {
		a := &cursor{toks: action}
		line := a.line()
		switch {
		case a.accept("drop", "constraint"), a.accept("alter", "constraint"):
		case a.accept("drop"):
			a.accept("column")
			a.accept("if", "exists")
			if col, ok := a.ident(); ok && !newTable && c.added[table+"\x00"+col] == nil {
				add(dropColumn, column(col), line)
			}
		case a.accept("alter"):
			a.accept("column")
			col, ok := a.ident()
			if !ok || newTable {
				continue
			}
			prior := c.added[table+"\x00"+col]
			switch {
			case a.accept("type"), a.accept("set", "data", "type"):
				if prior == nil {
					add(retypeColumn, column(col), line)
				}
			case a.accept("set", "not", "null"):
				if prior == nil || !prior.hasDefault {
					add(setNotNull, column(col), line)
				}
			}
		case a.accept("add"):
			if !a.accept("column") && (a.is("constraint") || a.is("primary") || a.is("unique") ||
				a.is("check") || a.is("foreign") || a.is("exclude")) {
				continue
			}
			ifNotExists := a.accept("if", "not", "exists")
			col, ok := a.ident()
			if !ok || newTable {
				continue
			}
			notNull, hasDefault := a.columnDefinition()
			if notNull && !hasDefault {
				add(addNotNullColumn, column(col), line)
			}
			if !ifNotExists {
				c.added[table+"\x00"+col] = &added{hasDefault: hasDefault}
			}
		}
	}
	return true
}

// relation accepts TABLE, VIEW or MATERIALIZED VIEW and returns which.
func relation(cur *cursor) string {
	switch {
	case cur.accept("table"):
		return "table"
	case cur.accept("view"):
		return "view"
	case cur.accept("materialized", "view"):
		return "materialized view"
	}
	return ""
}

// ---------------------------------------------------------------------------
// Reading tokens.

type statement struct {
	src  string // the text the tokens' offsets refer to
	toks []token
}

func (s statement) word(i int) string {
	if i < len(s.toks) && s.toks[i].kind == tokWord {
		return s.toks[i].text
	}
	return ""
}

// display renders the statement from its tokens, comments left out and
// whitespace collapsed, shortened for a Violation.
func (s statement) display() string {
	var b strings.Builder
	for i, t := range s.toks {
		raw := s.src[t.start:t.end]
		if i > 0 {
			prev := s.src[s.toks[i-1].start:s.toks[i-1].end]
			if raw != "." && raw != "," && raw != ")" && prev != "." && prev != "(" {
				b.WriteByte(' ')
			}
		}
		b.WriteString(raw)
	}
	return shorten(b.String())
}

func splitStatements(src string, toks []token) []statement {
	var out []statement
	start := 0
	for i, t := range toks {
		if t.kind == tokPunct && t.text == ";" {
			if i > start {
				out = append(out, statement{src: src, toks: toks[start:i]})
			}
			start = i + 1
		}
	}
	if start < len(toks) {
		out = append(out, statement{src: src, toks: toks[start:]})
	}
	return out
}

type cursor struct {
	toks []token
	i    int
}

// is reports whether the next tokens are the given keywords.
func (c *cursor) is(words ...string) bool {
	if c.i+len(words) > len(c.toks) {
		return false
	}
	for k, w := range words {
		if t := c.toks[c.i+k]; t.kind != tokWord || t.text != w {
			return false
		}
	}
	return true
}

// accept consumes the given keywords if they come next.
func (c *cursor) accept(words ...string) bool {
	if !c.is(words...) {
		return false
	}
	c.i += len(words)
	return true
}

func (c *cursor) acceptPunct(p string) bool {
	if c.i < len(c.toks) && c.toks[c.i].kind == tokPunct && c.toks[c.i].text == p {
		c.i++
		return true
	}
	return false
}

// line is the line of the next token (of the last one at the end).
func (c *cursor) line() int {
	switch {
	case c.i < len(c.toks):
		return c.toks[c.i].line
	case len(c.toks) > 0:
		return c.toks[len(c.toks)-1].line
	}
	return 0
}

// ident consumes one identifier, unquoted (folded to lower case) or quoted.
func (c *cursor) ident() (string, bool) {
	if c.i < len(c.toks) && (c.toks[c.i].kind == tokWord || c.toks[c.i].kind == tokIdent) {
		c.i++
		return c.toks[c.i-1].text, true
	}
	return "", false
}

// name consumes a possibly qualified name and returns it formatted.
func (c *cursor) name() (string, bool) {
	var parts []string
	for {
		part, ok := c.ident()
		if !ok {
			return "", false
		}
		parts = append(parts, part)
		if !c.acceptPunct(".") {
			return formatName(parts), true
		}
	}
}

// actions splits the rest of the statement at its top-level commas.
func (c *cursor) actions() [][]token {
	var (
		out   [][]token
		depth int
	)
	start := c.i
	for i := c.i; i < len(c.toks); i++ {
		if c.toks[i].kind != tokPunct {
			continue
		}
		switch c.toks[i].text {
		case "(":
			depth++
		case ")":
			depth--
		case ",":
			if depth == 0 {
				out = append(out, c.toks[start:i])
				start = i + 1
			}
		}
	}
	return append(out, c.toks[start:])
}

// columnDefinition reads the rest of an ADD COLUMN: whether it makes the
// column NOT NULL (PRIMARY KEY does too) and whether it gives it a value
// (DEFAULT, or GENERATED as identity or from an expression). Parenthesised
// parts (a CHECK, a type modifier) are not read.
func (c *cursor) columnDefinition() (notNull, hasDefault bool) {
	depth := 0
	for ; c.i < len(c.toks); c.i++ {
		t := c.toks[c.i]
		switch {
		case t.kind == tokPunct && t.text == "(":
			depth++
		case t.kind == tokPunct && t.text == ")":
			depth--
		case depth > 0:
		case c.is("not", "null"), c.is("primary", "key"):
			notNull = true
		case c.is("default"), c.is("generated"):
			hasDefault = true
		}
	}
	return notNull, hasDefault
}

// parseName reads the object of an annotation: one possibly qualified name.
func parseName(s string) ([]string, bool) {
	toks, comments := lex(s, 1)
	if len(comments) > 0 {
		return nil, false
	}
	cur := &cursor{toks: toks}
	var parts []string
	for {
		part, ok := cur.ident()
		if !ok {
			return nil, false
		}
		parts = append(parts, part)
		if !cur.acceptPunct(".") {
			return parts, cur.i == len(toks)
		}
	}
}

// formatName joins name parts with dots, quoting those that need it.
func formatName(parts []string) string {
	quoted := make([]string, len(parts))
	for i, p := range parts {
		quoted[i] = p
		if !plainIdentRE.MatchString(p) {
			quoted[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
		}
	}
	return strings.Join(quoted, ".")
}

var plainIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxStatement {
		return string(r[:maxStatement-1]) + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// The lexer: just enough of PostgreSQL's to find statements and names.

type tokenKind int

const (
	tokWord   tokenKind = iota // unquoted identifier or keyword, ASCII lower-cased
	tokIdent                   // quoted identifier, its contents
	tokString                  // string literal, its contents ('' undoubled)
	tokDollar                  // dollar-quoted string, its body
	tokPunct                   // one character of punctuation
	tokOther                   // number, parameter
)

type token struct {
	kind       tokenKind
	text       string
	line       int // of the token's first character
	start, end int // byte offsets in the lexed text
}

// comment is a "--" line comment: its text after the dashes and its line.
type comment struct {
	text string
	line int
}

// lex splits src, whose first line is line, into tokens, dropping
// whitespace and comments but returning the line comments.
func lex(src string, line int) ([]token, []comment) {
	var (
		toks     []token
		comments []comment
	)
	n := len(src)
	for i := 0; i < n; {
		c := src[i]
		start, startLine := i, line
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && src[i+1] == '-':
			end := strings.IndexByte(src[i:], '\n')
			if end < 0 {
				end = n - i
			}
			comments = append(comments, comment{text: src[i+2 : i+end], line: line})
			i += end
		case c == '/' && i+1 < n && src[i+1] == '*':
			// Block comments nest in PostgreSQL.
			depth := 1
			for i += 2; i < n && depth > 0; {
				switch {
				case src[i] == '/' && i+1 < n && src[i+1] == '*':
					depth++
					i += 2
				case src[i] == '*' && i+1 < n && src[i+1] == '/':
					depth--
					i += 2
				default:
					if src[i] == '\n' {
						line++
					}
					i++
				}
			}
		case c == '\'':
			var body string
			body, i, line = quoted(src, i, line, '\'', false)
			toks = append(toks, token{kind: tokString, text: body, line: startLine, start: start, end: i})
		case c == '"':
			var body string
			body, i, line = quoted(src, i, line, '"', false)
			toks = append(toks, token{kind: tokIdent, text: body, line: startLine, start: start, end: i})
		case c == '$':
			tag := dollarTag(src[i:])
			if tag == "" { // a parameter such as $1
				for i++; i < n && isDigit(src[i]); i++ {
				}
				toks = append(toks, token{kind: tokOther, line: line, start: start, end: i})
				break
			}
			bodyStart := i + len(tag)
			end := strings.Index(src[bodyStart:], tag)
			bodyEnd, next := n, n
			if end >= 0 {
				bodyEnd, next = bodyStart+end, bodyStart+end+len(tag)
			}
			line += strings.Count(src[i:next], "\n")
			i = next
			toks = append(toks, token{kind: tokDollar, text: src[bodyStart:bodyEnd], line: startLine, start: start, end: i})
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentChar(src[j]) {
				j++
			}
			if (c == 'e' || c == 'E') && j == i+1 && j < n && src[j] == '\'' {
				var body string
				body, i, line = quoted(src, j, line, '\'', true)
				toks = append(toks, token{kind: tokString, text: body, line: startLine, start: start, end: i})
				break
			}
			toks = append(toks, token{kind: tokWord, text: asciiLower(src[i:j]), line: line, start: start, end: j})
			i = j
		case isDigit(c):
			for i++; i < n && (isIdentChar(src[i]) || src[i] == '.'); i++ {
			}
			toks = append(toks, token{kind: tokOther, line: line, start: start, end: i})
		default:
			i++
			toks = append(toks, token{kind: tokPunct, text: src[start:i], line: line, start: start, end: i})
		}
	}
	return toks, comments
}

// quoted reads a quoted string or identifier starting at src[i] == q. A
// doubled quote stands for one; with backslashes (an E'...' string) a
// backslash escapes the next character. It returns the contents, the offset
// after the closing quote and the line there. An unterminated one runs to
// the end.
func quoted(src string, i, line int, q byte, backslashes bool) (string, int, int) {
	var b strings.Builder
	for i++; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line++
		case backslashes && c == '\\' && i+1 < len(src):
			b.WriteByte(c)
			i++
			c = src[i]
			if c == '\n' {
				line++
			}
		case c == q && i+1 < len(src) && src[i+1] == q:
			i++
		case c == q:
			return b.String(), i + 1, line
		}
		b.WriteByte(c)
	}
	return b.String(), len(src), line
}

// dollarTag returns the opening tag of a dollar-quoted string at the start
// of s ("$$" or "$tag$"), or "" when s does not start one.
func dollarTag(s string) string {
	if len(s) < 2 {
		return ""
	}
	if s[1] == '$' {
		return "$$"
	}
	if !isIdentStart(s[1]) {
		return ""
	}
	for j := 2; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1]
		case !isIdentChar(s[j]):
			return ""
		}
	}
	return ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// asciiLower folds an unquoted identifier as PostgreSQL does: ASCII only.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
