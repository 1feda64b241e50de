package fsm

import (
	"slices"
	"strings"
)

// DiagramMarkdown renders docs/state-machine.md from the machine's own
// definition (DefaultTable), so the document can never drift from the code:
// a test fails when the file is stale.
func DiagramMarkdown() string {
	t := DefaultTable()
	var b strings.Builder
	b.WriteString("# The session state machine\n\n")
	b.WriteString("<!-- Generated from fsm.DefaultTable by `go test ./fsm -run TestStateDiagram -update`; do not edit. -->\n\n")
	b.WriteString("The table in `fsm/table.go` decides. Each row answers one input event from its source states; the\n")
	b.WriteString("first row of the event that looplab/fsm allows from the current state and whose guard holds fires,\n")
	b.WriteString("moves the session to its target (recorded in the history under the row's name) and runs its action.\n")
	b.WriteString("A row whose target is `—` changes the record but not the state, and writes no history entry. When no\n")
	b.WriteString("row applies, the event's rule says whether it is refused (an HTTP 409 for a command) or ignored as a\n")
	b.WriteString("late or repeated input (a no-op).\n\n")

	b.WriteString("```mermaid\nstateDiagram-v2\n    [*] --> created\n")
	var edges []string
	for _, r := range t.Rows {
		if r.Dst == Stay {
			continue
		}
		for _, s := range r.Src {
			e := "    " + string(s) + " --> " + string(r.Dst) + ": " + r.Name
			if !slices.Contains(edges, e) {
				edges = append(edges, e)
			}
		}
	}
	slices.Sort(edges)
	b.WriteString(strings.Join(edges, "\n"))
	b.WriteString("\n```\n\n")

	b.WriteString("## Rows\n\n| event | row | from | to | when | does |\n|---|---|---|---|---|---|\n")
	for _, r := range t.Rows {
		dst := "—"
		if r.Dst != Stay {
			dst = "`" + string(r.Dst) + "`"
		}
		src := states(r.Src)
		if len(r.Src) == len(States) {
			src = "any"
		}
		b.WriteString("| `" + string(r.On) + "` | `" + r.Name + "` | " + src + " | " + dst + " | " +
			cell(r.When.Doc) + " | " + cell(r.Do.Doc) + " |\n")
	}

	b.WriteString("\n## When no row applies\n\nThe first line that matches decides; an event with no matching line is refused.\n\n")
	b.WriteString("| event | only | in | when | answer | reason |\n|---|---|---|---|---|---|\n")
	for _, e := range t.Events {
		only := cell(e.By.Doc)
		if len(e.Otherwise) == 0 {
			b.WriteString("| `" + string(e.On) + "` | " + only + " | | | refused | |\n")
		}
		for _, o := range e.Otherwise {
			in := "any"
			if o.In != nil {
				in = states(o.In)
			}
			answer := "ignored"
			if o.Refuse {
				answer = "refused"
			}
			if o.Anomaly != "" {
				answer += ", anomaly"
			}
			b.WriteString("| `" + string(e.On) + "` | " + only + " | " + in + " | " + cell(o.When.Doc) + " | " + answer + " | " + o.Reason + " |\n")
			only = ""
		}
	}

	b.WriteString("\nTimers (armed and disarmed as effects, persisted with the transition; a timer that fires after\n")
	b.WriteString("it was disarmed is ignored):\n\n| timer | meaningful in |\n|---|---|\n")
	for _, k := range TimerKinds {
		b.WriteString("| `" + string(k) + "` | " + states(timerStates[k]) + " |\n")
	}
	return b.String()
}

func states(ss []State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = "`" + string(s) + "`"
	}
	return strings.Join(out, ", ")
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}
