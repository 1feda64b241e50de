package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

func init() { commands["reconcile"] = runReconcile }

// exitError is an error with the process exit code it stands for
// (docs/contract.md §5: reconcile exits 1 with differences, 2 when it could
// not run).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process's exit status for this error.
func (e *exitError) ExitCode() int { return e.code }

// exitCode is the exit status main uses for err (1 unless err says).
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// errDifferences is reconcile's answer when the books differ.
var errDifferences = errors.New("the books differ")

// runReconcile is `chargeflow reconcile --date YYYY-MM-DD [--config F]`
// (docs/contract.md §5): it reconciles that Beijing day against Huifu's
// trade bill with the same settings as serve, prints the report and stores
// it. Exit 0: no differences; 1: differences; 2: it could not run.
func runReconcile(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprintln(stdout, "usage: chargeflow reconcile --date YYYY-MM-DD [--config file] [serve's flags]\n"+
				"Reconciles that Beijing day's debits and refunds against Huifu's trade bill, prints and stores the report.\n"+
				"Exit 0: no differences; 1: differences; 2: it could not run. `chargeflow serve --help` lists the settings.")
			return nil
		}
	}
	date, rest, err := takeFlag(args, "date")
	if err != nil || date == "" {
		fmt.Fprintln(stderr, "usage: chargeflow reconcile --date YYYY-MM-DD [--config file] [serve's flags]")
		return &exitError{2, errors.Join(err, errors.New("reconcile: --date is required"))}
	}
	if err := store.CheckReconcileDate(date); err != nil {
		return &exitError{2, fmt.Errorf("reconcile: --date %q is not YYYY-MM-DD", date)}
	}
	cfg, err := loadConfig(rest, getenv, stderr)
	if err != nil {
		return &exitError{2, err}
	}
	if cfg.HuifuBaseURL == "" {
		return &exitError{2, errors.New("CHARGEFLOW_HUIFU_BASE_URL: reconcile needs a Huifu (or a `chargeflow sandbox`) to ask for the trade bill")}
	}
	log := newLogger(cfg.LogFormat, stderr)
	st, err := openStore(ctx, cfg, log)
	if err != nil && cfg.RedisURL == "" {
		err = fmt.Errorf("%w (the embedded store belongs to one process: stop chargeflow serve first)", err)
	}
	if err != nil {
		return &exitError{2, err}
	}
	defer st.Close()
	payCfg, err := huifuConfig(cfg)
	if err != nil {
		return &exitError{2, err}
	}
	payCfg.Logger = log.With("component", "payscore")
	pay, err := payscore.New(payCfg)
	if err != nil {
		return &exitError{2, fmt.Errorf("payscore: %w", err)}
	}
	// The engine only flags sessions here (an event without effects): it
	// needs no charger link and runs no workers.
	eng, err := session.New(session.Config{Machine: cfg.Machine, InstanceID: cfg.InstanceID}, st, pay, nil, log.With("component", "engine"), nil, nil)
	if err != nil {
		return &exitError{2, err}
	}
	rec, err := session.NewReconciler(session.ReconcilerConfig{Store: st, Bill: pay, Flagger: eng, Instance: cfg.InstanceID,
		Log: log.With("component", "reconcile")})
	if err != nil {
		return &exitError{2, err}
	}
	rep, err := rec.Run(ctx, date)
	printReport(stdout, rep)
	switch {
	case err != nil:
		return &exitError{2, fmt.Errorf("reconcile %s: %w", date, err)}
	case rep.Differences > 0:
		return &exitError{1, fmt.Errorf("reconcile %s: %d differences: %w", date, rep.Differences, errDifferences)}
	}
	return nil
}

// takeFlag removes --name value / --name=value from args.
func takeFlag(args []string, name string) (string, []string, error) {
	var v string
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--"+name || a == "-"+name:
			if i+1 >= len(args) {
				return "", nil, fmt.Errorf("--%s needs a value", name)
			}
			v = args[i+1]
			i++
		case strings.HasPrefix(a, "--"+name+"="), strings.HasPrefix(a, "-"+name+"="):
			v = a[strings.IndexByte(a, '=')+1:]
		default:
			rest = append(rest, a)
		}
	}
	return v, rest, nil
}

// printReport writes a report for a person: the totals, then one row per
// differing line.
func printReport(w io.Writer, r store.Reconciliation) {
	fmt.Fprintf(w, "reconciliation %s: %s — %d matched, %d differences (our lines %d, Huifu's %d)\n",
		r.Date, r.Status, r.Matched, r.Differences, r.OurLines, r.HuifuLines)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	if len(r.Lines) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OUTCOME\tKIND\tSESSION\tREQ_SEQ_ID\tHF_SEQ_ID\tOURS\tHUIFU\tNOTE")
	for _, l := range r.Lines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s %s\t%s %s\t%s\n", l.Outcome, l.Kind, dash(l.SessionID), dash(l.ReqSeqID), dash(l.HfSeqID),
			l.OurAmountFen.Yuan(), dash(l.OurStatus), l.HuifuAmountFen.Yuan(), dash(l.HuifuStatus), l.Note)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// startReconcile starts the daily run inside serve (CHARGEFLOW_RECONCILE_AT).
func (a *app) startReconcile(ctx context.Context, st store.Store, bill session.BillSource, eng *session.Engine) error {
	if !a.cfg.ReconcileOn {
		return nil
	}
	rec, err := session.NewReconciler(session.ReconcilerConfig{Store: st, Bill: bill, Flagger: eng, Instance: a.cfg.InstanceID,
		Log: a.log.With("component", "reconcile")})
	if err != nil {
		return err
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); rec.Daily(ctx, a.cfg.ReconcileAt, 0) }()
	return nil
}
