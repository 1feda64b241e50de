package fsm

import (
	"strings"

	lfsm "github.com/looplab/fsm"
)

// DiagramMarkdown renders docs/state-machine.md from the machine's own
// definition (Table, through looplab's Mermaid visualiser), so the picture
// can never drift from the code: a test fails when the file is stale.
func DiagramMarkdown() string {
	var b strings.Builder
	b.WriteString("# The session state machine\n\n")
	b.WriteString("<!-- Generated from fsm.Table by `go test ./fsm -run TestStateDiagram -update`; do not edit. -->\n\n")
	b.WriteString("Rows of `fsm.Table` (looplab/fsm events). The history of a session names the input event;\n")
	b.WriteString("where one input can end in two places the row is named after the outcome (`no_energy`,\n")
	b.WriteString("`close_charging`) or after the timer that fired (`confirm_timeout`, `start_timeout`,\n")
	b.WriteString("`stop_timeout`, `offline_grace`).\n\n")
	diagram, _ := lfsm.VisualizeWithType(NewLooplab(Created), lfsm.MERMAID)
	b.WriteString("```mermaid\n")
	b.WriteString(strings.TrimSpace(diagram))
	b.WriteString("\n```\n\n")
	b.WriteString("| row | from | to |\n|---|---|---|\n")
	for _, t := range Table {
		src := make([]string, len(t.Src))
		for i, s := range t.Src {
			src[i] = "`" + string(s) + "`"
		}
		b.WriteString("| `" + t.Name + "` | " + strings.Join(src, ", ") + " | `" + string(t.Dst) + "` |\n")
	}
	b.WriteString("\nTimers (armed and disarmed as effects, persisted with the transition; a timer that fires after\n")
	b.WriteString("it was disarmed is ignored):\n\n| timer | meaningful in |\n|---|---|\n")
	for _, k := range TimerKinds {
		states := make([]string, len(timerStates[k]))
		for i, s := range timerStates[k] {
			states[i] = "`" + string(s) + "`"
		}
		b.WriteString("| `" + string(k) + "` | " + strings.Join(states, ", ") + " |\n")
	}
	return b.String()
}
