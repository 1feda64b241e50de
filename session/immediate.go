package session

import (
	"context"
	"crypto/rand"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// DefaultImmediateWindow is how many commits' effects, at most, an engine
// performs at once on the immediate path (Config.ImmediateWindow).
const DefaultImmediateWindow = 256

// The immediate path (docs/architecture.md "One event, start to end"): the
// commit that adds an effect due now also leases its task to this instance
// (store.CommitLease), and the instance performs it at once with the record
// it just committed — no wake-up, no Claim, no reload. What decides and
// records the outcome is the claim path's own performTask, so the two paths
// differ only in how a task is obtained. The window bounds the commits whose
// effects are in flight (most of them publishes waiting for a PUBACK): a
// commit that finds no free slot takes no lease, and the workers claim its
// tasks as before. The claim path also stays for everything the immediate
// path does not do: a task of another instance or of a crashed process
// (after its lease, or at once on ReleaseLeases), a retry, and every task
// due later (timers, deferrals).
type immediate struct {
	// mu guards ctx and the Adds of wg: Run opens the path (ctx set) once
	// it has released its previous life's leases, and closes it (ctx nil)
	// before it waits for wg.
	mu    sync.Mutex
	ctx   context.Context // Run's; nil while Run is not running
	wg    sync.WaitGroup
	slots chan struct{} // one per commit in flight; nil: the path is off
	// afterCommit, when set (tests), is called with the tasks a commit was
	// granted, before they are performed; false drops them (as a process
	// that dies right after its commit would), leaving them to their lease.
	afterCommit func(granted []store.Task) bool
}

// slot is one reservation of the window, held from before a commit to the
// end of the performs of the tasks it was granted.
type slot struct {
	e     *Engine
	ctx   context.Context
	lease *store.CommitLease
}

// open makes the path available under Run's ctx.
func (im *immediate) open(ctx context.Context) {
	im.mu.Lock()
	im.ctx = ctx
	im.mu.Unlock()
}

// close stops new reservations and waits for the performs in flight.
func (im *immediate) close() {
	im.mu.Lock()
	im.ctx = nil
	im.mu.Unlock()
	im.wg.Wait()
}

// reserve takes a slot for a commit that adds an effect due now (at now), or
// returns nil: nothing to perform at once, the path is closed (Run is not
// running, or stopping), or the window is full.
func (e *Engine) reserve(next fsm.Session, effects []fsm.Effect, now time.Time) *slot {
	im := &e.imm
	if im.slots == nil || !dueNow(next, effects, now) {
		return nil
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.ctx == nil || im.ctx.Err() != nil {
		return nil
	}
	select {
	case im.slots <- struct{}{}:
	default:
		return nil // the window is full: the claim path takes these
	}
	im.wg.Add(1)
	return &slot{e: e, ctx: im.ctx, lease: &store.CommitLease{
		Token: store.LeaseToken(e.cfg.InstanceID+"/now", randomToken()),
		Until: now.Add(e.cfg.Lease), DueBy: now}}
}

// dueNow reports whether a commit adds an effect the immediate path would
// perform: one due by now that is not a timer (a timer fires through the
// outbox at its time).
func dueNow(next fsm.Session, effects []fsm.Effect, now time.Time) bool {
	for _, eff := range effects {
		if eff.Kind != fsm.EffDisarmTimer && eff.Kind != fsm.EffArmTimer && !store.TaskDue(eff, next).After(now) {
			return true
		}
	}
	return false
}

// release gives a slot back without performing anything (the commit failed,
// or was granted nothing). A nil slot is fine.
func (sl *slot) release() {
	if sl == nil {
		return
	}
	<-sl.e.imm.slots
	sl.e.imm.wg.Done()
}

// perform performs, on its own goroutine, the tasks the commit of rec was
// granted, then releases the slot. It never runs on the caller's goroutine:
// the caller may be a link's handler, which must not wait on the same
// link's publishes. The first task gets rec, the record just committed; a
// later one reloads, since the first may have committed an event itself.
func (sl *slot) perform(rec fsm.Session) {
	if sl == nil {
		return
	}
	granted := sl.lease.Granted
	if len(granted) == 0 {
		sl.release()
		return
	}
	if f := sl.e.imm.afterCommit; f != nil && !f(granted) {
		sl.release()
		return
	}
	go func() {
		defer sl.release()
		for i, t := range granted {
			if sl.ctx.Err() != nil {
				return // shutting down: the leases bring them back
			}
			if i == 0 {
				sl.e.performTask(sl.ctx, t, &rec)
			} else {
				sl.e.performTask(sl.ctx, t, nil)
			}
		}
	}()
}

func randomToken() []byte {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return b
}
