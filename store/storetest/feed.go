package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

func changeIDs(cs []store.Change) []string {
	var out []string
	for _, c := range cs {
		if c.Kind == store.ChangeCharger {
			out = append(out, c.ChargerID+"@"+fmt.Sprint(c.Version))
		} else {
			out = append(out, c.SessionID+"@"+fmt.Sprint(c.Version))
		}
	}
	return out
}

func testChangeFeed(e *env) {
	t := e.t
	if id, err := e.s.LatestChangeID(e.ctx); err != nil || id != "" {
		t.Fatalf("latest of an empty feed: %q %v", id, err)
	}
	a := e.create(Session("a", "CP1", 1, T0))
	b := e.create(Session("b", "CP2", 1, T0))
	a, err := e.move(a, fsm.UserConfirmed, T0.Add(time.Second))
	must(t, err)
	// a commit without Publish adds nothing
	n := b.Clone()
	n.Seq = 9
	must(t, e.s.Commit(e.ctx, store.Commit{ExpectedVersion: 1, Session: n}))
	must(t, e.s.PutCharger(e.ctx, store.Charger{ID: "CP1", Connectors: []int{1}}))
	c, err := e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) {
		c.Online, c.LastHeardAt, c.UpdatedAt = true, T0.Add(2*time.Second), T0.Add(2*time.Second)
		return []byte(`{"id":"CP1","online":true}`), nil
	})
	must(t, err)
	if !c.Online || c.ID != "CP1" {
		t.Fatalf("updated charger %+v", c)
	}
	_, err = e.move(a, fsm.Charging, T0.Add(3*time.Second))
	must(t, err)

	all, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)
	want := []string{"a@1", "b@1", "a@2", "CP1@0", "a@3"}
	if !slices.Equal(changeIDs(all), want) {
		t.Fatalf("feed %v, want %v", changeIDs(all), want)
	}
	if all[3].Kind != store.ChangeCharger || string(all[3].Data) != `{"id":"CP1","online":true}` ||
		all[2].Kind != store.ChangeSession || string(all[2].Data) != `{"id":"a","state":"user_confirmed"}` ||
		!all[2].At.Equal(T0.Add(time.Second)) || all[2].ChargerID != "CP1" {
		t.Fatalf("changes %+v", all)
	}
	seen := map[string]bool{}
	for _, c := range all {
		if c.ID == "" || seen[c.ID] {
			t.Fatalf("change ids not unique: %+v", all)
		}
		seen[c.ID] = true
	}
	// resume after each id, in small batches
	for i := range all {
		rest, err := e.s.ReadChanges(e.ctx, all[i].ID, 2, 0)
		must(t, err)
		wantN := min(2, len(all)-i-1)
		if len(rest) != wantN || (wantN > 0 && rest[0].ID != all[i+1].ID) {
			t.Fatalf("after %s: %v", all[i].ID, changeIDs(rest))
		}
	}
	latest, err := e.s.LatestChangeID(e.ctx)
	must(t, err)
	if latest != all[len(all)-1].ID {
		t.Fatalf("latest %q, want %q", latest, all[len(all)-1].ID)
	}
	if _, err := e.s.UpdateCharger(e.ctx, "nope", func(*store.Charger) ([]byte, error) { return nil, nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing charger: %v", err)
	}

	// across a reopen, ids keep increasing and resume works
	e.reopen()
	a, err = e.s.GetSession(e.ctx, "a")
	must(t, err)
	_, err = e.move(a, fsm.Stopping, T0.Add(4*time.Second))
	must(t, err)
	rest, err := e.s.ReadChanges(e.ctx, latest, 10, 0)
	must(t, err)
	if !slices.Equal(changeIDs(rest), []string{"a@4"}) {
		t.Fatalf("resume across reopen: %v", changeIDs(rest))
	}
	all2, err := e.s.ReadChanges(e.ctx, "", 100, 0)
	must(t, err)
	if len(all2) != 6 || all2[5].ID != rest[0].ID {
		t.Fatalf("feed after reopen %v", changeIDs(all2))
	}
	if _, err := e.s.ReadChanges(e.ctx, "not-an-id", 10, 0); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
}

func testChangeFeedWait(e *env) {
	t := e.t
	e.create(Session("a", "CP1", 1, T0))
	last, err := e.s.LatestChangeID(e.ctx)
	must(t, err)
	// nothing new: a short wait returns empty
	got, err := e.s.ReadChanges(e.ctx, last, 10, 50*time.Millisecond)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("got %v", changeIDs(got))
	}
	// a waiting reader returns when a change arrives (the wait is only an
	// upper bound: nothing here depends on how long it takes)
	type result struct {
		cs  []store.Change
		err error
	}
	done := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		var out []store.Change
		var err error
		for len(out) == 0 && err == nil {
			out, err = e.s.ReadChanges(e.ctx, last, 10, 20*time.Second)
		}
		done <- result{out, err}
	}()
	<-started
	e.create(Session("b", "CP2", 1, T0))
	r := <-done
	must(t, r.err)
	if !slices.Equal(changeIDs(r.cs), []string{"b@1"}) {
		t.Fatalf("waiter got %v", changeIDs(r.cs))
	}
	// a cancelled context ends the wait
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := e.s.ReadChanges(ctx, r.cs[0].ID, 10, 20*time.Second); err == nil {
		t.Fatal("wait with a cancelled context returned no error")
	}
}
