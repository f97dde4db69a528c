package tiered

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// span is what recTracer records of one span.
type span struct {
	SpanStart
	parent *span // the span in the context Start got, or nil
	end    SpanEnd
	ended  bool
}

// spanKey is the context key under which recTracer puts the current span.
type spanKey struct{}

func spanOf(ctx context.Context) *span {
	s, _ := ctx.Value(spanKey{}).(*span)
	return s
}

// recTracer is a Tracer that records every span, and puts it in the
// context it returns, as a tracing library does.
type recTracer struct {
	mu    sync.Mutex
	spans []*span // guarded by mu
	// started, if set, receives each span as it starts.
	started chan *span
}

func (r *recTracer) Start(ctx context.Context, s SpanStart) (context.Context, func(SpanEnd)) {
	sp := &span{SpanStart: s, parent: spanOf(ctx)}
	r.mu.Lock()
	r.spans = append(r.spans, sp)
	r.mu.Unlock()
	if r.started != nil {
		r.started <- sp
	}
	return context.WithValue(ctx, spanKey{}, sp), func(e SpanEnd) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if sp.ended {
			panic(fmt.Sprintf("span %s ended twice", sp.Op))
		}
		sp.end, sp.ended = e, true
	}
}

// take returns the spans recorded so far, and forgets them.
func (r *recTracer) take() []*span {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.spans
	r.spans = nil
	return s
}

func (s *span) String() string {
	p := "-"
	if s.parent != nil {
		p = string(s.parent.Op)
	}
	return fmt.Sprintf("%s(key=%q keys=%d parent=%s ended=%v err=%v origin=%v shared=%v)",
		s.Op, s.Key, s.Keys, p, s.ended, s.end.Err, s.end.Origin, s.end.Shared)
}

// cmdSpans is a go-redis hook, as redisotel is one, that records which
// span each command of a cached key ran in.
type cmdSpans struct {
	mu   sync.Mutex
	seen map[string][]*span // by command name and first key: "get test:{k}"; guarded by mu
}

func (h *cmdSpans) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cmdSpans) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record(ctx, cmd)
		return next(ctx, cmd)
	}
}
func (h *cmdSpans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.record(ctx, cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *cmdSpans) record(ctx context.Context, cmd redis.Cmder) {
	var key string
	for _, a := range cmd.Args()[1:] {
		if s := fmt.Sprint(a); strings.Contains(s, "{") {
			key = s
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = make(map[string][]*span)
	}
	name := cmd.Name() + " " + key
	h.seen[name] = append(h.seen[name], spanOf(ctx))
}

// spans returns the spans the commands named name ran in.
func (h *cmdSpans) spans(name string) []*span {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[name]
}

// tracedNode is newNode with a recTracer and a cmdSpans hook on the client.
func tracedNode(t *testing.T, opts Options) (*Cache[Product], *recTracer, *cmdSpans) {
	t.Helper()
	rec, hook := &recTracer{}, &cmdSpans{}
	rdb := redistest.Client(t, redistest.Mini(t).Addr)
	rdb.AddHook(hook)
	opts.Namespace, opts.TTL, opts.MaxStaleness, opts.Tracer = "test", time.Minute, time.Minute, rec
	c, err := New[Product](rdb, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rec.take() // nothing before: WaitReady is not traced
	return c, rec, hook
}

// wantSpans checks got against want, in order, by their String.
func wantSpans(t *testing.T, what string, got []*span, want ...string) {
	t.Helper()
	var g []string
	for _, s := range got {
		g = append(g, s.String())
	}
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: spans\n%s\nwant\n%s", what, strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

// TestTracer: which operations are traced, with what, and that the
// context Start returns reaches the loader and the Redis calls.
func TestTracer(t *testing.T) {
	ctx := context.Background()
	c, rec, hook := tracedNode(t, Options{})
	boom := errors.New("boom")
	var loaderSpan *span
	db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		loaderSpan = spanOf(ctx)
		switch key {
		case "nf":
			return Product{}, ErrNotFound
		case "bad":
			return Product{}, boom
		case "tagged":
			if err := AddTags(ctx, "t"); err != nil {
				return Product{}, err
			}
		}
		return Product{ID: 1}, nil
	})

	if _, err := c.GetOrLoad(ctx, "1", db); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "cold GetOrLoad", rec.take(),
		`get-or-load(key="1" keys=1 parent=- ended=true err=<nil> origin=loader shared=false)`,
		`load(key="1" keys=1 parent=get-or-load ended=true err=<nil> origin=none shared=false)`)
	if loaderSpan == nil || loaderSpan.Op != OpLoad || loaderSpan.parent.Op != OpGetOrLoad {
		t.Fatalf("the loader's context holds span %v, want the load span under get-or-load", loaderSpan)
	}
	// The flight's Redis calls run in the get-or-load span: a go-redis
	// tracing hook nests its spans there.
	for _, cmd := range []string{"get test:{1}", "evalsha test:{1}"} {
		got := hook.spans(cmd)
		if len(got) == 0 || got[0] == nil || got[0].Op != OpGetOrLoad {
			t.Fatalf("%s ran in spans %v, want get-or-load", cmd, got)
		}
	}

	c.l1.Wait()
	if _, err := c.GetOrLoad(ctx, "1", db); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.L1Hits != 2 {
		t.Fatalf("L1 hits = %d, want 2", s.L1Hits)
	}
	wantSpans(t, "L1 hits", rec.take()) // none

	if _, err := c.GetOrLoad(ctx, "nf", db); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := c.GetOrLoad(ctx, "bad", db); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := c.GetOrLoad(ctx, "", db); !errors.Is(err, ErrKeyEmpty) {
		t.Fatal(err)
	}
	got := rec.take()
	wantSpans(t, "misses and errors", got,
		`get-or-load(key="nf" keys=1 parent=- ended=true err=tiered: not found origin=loader shared=false)`,
		`load(key="nf" keys=1 parent=get-or-load ended=true err=tiered: not found origin=none shared=false)`,
		`get-or-load(key="bad" keys=1 parent=- ended=true err=boom origin=none shared=false)`,
		`load(key="bad" keys=1 parent=get-or-load ended=true err=boom origin=none shared=false)`,
		`get(key="absent" keys=1 parent=- ended=true err=tiered: not found origin=redis shared=false)`)
	if !errors.Is(got[2].end.Err, boom) {
		t.Fatalf("get-or-load ended with %v, want the loader's error", got[2].end.Err)
	}

	// A tagged load's AddTags runs in the load span.
	if _, err := c.GetOrLoad(ctx, "tagged", db); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if loaderSpan.Op != OpLoad || loaderSpan.Key != "tagged" {
		t.Fatalf("loader span %v", loaderSpan)
	}
	var tagged bool
	for _, name := range []string{"evalsha test:tag:{t}", "eval test:tag:{t}"} {
		for _, s := range hook.spans(name) {
			tagged = tagged || s == loaderSpan
		}
	}
	if !tagged {
		t.Fatal("no Redis call of the key ran in the load span (AddTags)")
	}

	bulk := BulkLoaderFunc[Product](func(ctx context.Context, keys []string) (map[string]Product, error) {
		loaderSpan = spanOf(ctx)
		m := map[string]Product{}
		for _, k := range keys {
			m[k] = Product{ID: 2}
		}
		return m, nil
	})
	if m, err := c.GetMany(ctx, []string{"1", "m1", "m2"}, bulk); err != nil || len(m) != 3 {
		t.Fatal(m, err)
	}
	if loaderSpan.Op != OpLoadMany || loaderSpan.parent.Op != OpGetMany {
		t.Fatalf("bulk loader span %v", loaderSpan)
	}
	c.l1.Wait()
	if _, err := c.GetManyCached(ctx, []string{"1", "m1", "absent"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetMany(ctx, []string{"1", "m1"}, bulk); err != nil { // all in L1
		t.Fatal(err)
	}
	wantSpans(t, "batches", rec.take(),
		`get-many(key="" keys=2 parent=- ended=true err=<nil> origin=none shared=false)`,
		`load-many(key="" keys=2 parent=get-many ended=true err=<nil> origin=none shared=false)`,
		`get-many-cached(key="" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`)

	if err := c.Set(ctx, "2", Product{ID: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWithTTL(ctx, "3", Product{ID: 3}, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "3", "m1"); err != nil {
		t.Fatal(err)
	}
	if err := c.InvalidateTags(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if err := c.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "writes", rec.take(),
		`set(key="2" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`set(key="3" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`delete(key="2" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`delete(key="" keys=2 parent=- ended=true err=<nil> origin=none shared=false)`,
		`invalidate-tags(key="" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`clear(key="" keys=0 parent=- ended=true err=<nil> origin=none shared=false)`)
	if s := hook.spans("evalsha test:{2}"); len(s) == 0 || s[len(s)-1] == nil || s[len(s)-1].Op != OpDelete {
		t.Fatalf("the delete script of key 2 ran in %v, want the delete span", s)
	}

	// A Scoped view is traced as the Cache, with the stored key.
	u := c.Scope("user 1")
	if _, err := u.GetOrLoad(ctx, "me", db); err != nil {
		t.Fatal(err)
	}
	if err := u.Set(ctx, "me", Product{ID: 9}); err != nil {
		t.Fatal(err)
	}
	if err := u.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	me := fmt.Sprintf("%q", u.Key("me"))
	wantSpans(t, "scoped", rec.take(),
		`get-or-load(key=`+me+` keys=1 parent=- ended=true err=<nil> origin=loader shared=false)`,
		`load(key=`+me+` keys=1 parent=get-or-load ended=true err=<nil> origin=none shared=false)`,
		`set(key=`+me+` keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`invalidate-tags(key="" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`)
}

// TestTracerL1Hits: with TraceL1Hits, reads answered by L1 are traced too.
func TestTracerL1Hits(t *testing.T) {
	ctx := context.Background()
	c, rec, _ := tracedNode(t, Options{TraceL1Hits: true})
	db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) { return Product{ID: 1}, nil })
	bulk := BulkLoaderFunc[Product](func(ctx context.Context, keys []string) (map[string]Product, error) {
		return nil, errors.New("bulk loader called for keys in L1")
	})
	if _, err := c.GetOrLoad(ctx, "1", db); err != nil {
		t.Fatal(err)
	}
	c.l1.Wait()
	if _, err := c.GetOrLoad(ctx, "1", db); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetMany(ctx, []string{"1"}, bulk); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetManyCached(ctx, []string{"1", "absent"}); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "L1 hits traced", rec.take(),
		`get-or-load(key="1" keys=1 parent=- ended=true err=<nil> origin=loader shared=false)`,
		`load(key="1" keys=1 parent=get-or-load ended=true err=<nil> origin=none shared=false)`,
		`get-or-load(key="1" keys=1 parent=- ended=true err=<nil> origin=l1 shared=false)`,
		`get(key="1" keys=1 parent=- ended=true err=<nil> origin=l1 shared=false)`,
		`get-many(key="" keys=1 parent=- ended=true err=<nil> origin=none shared=false)`,
		`get-many-cached(key="" keys=2 parent=- ended=true err=<nil> origin=none shared=false)`)
}

// TestTracerShared: of two readers of one flight, the leader's span has
// the load under it; the other's is marked shared and has none.
func TestTracerShared(t *testing.T) {
	ctx := context.Background()
	c, rec, _ := tracedNode(t, Options{})
	loading, release := make(chan struct{}), make(chan struct{})
	db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		close(loading)
		<-release
		return Product{ID: 1}, nil
	})
	errs := make(chan error, 2)
	go func() {
		_, err := c.GetOrLoad(ctx, "1", db)
		errs <- err
	}()
	<-loading
	go func() {
		_, err := c.GetOrLoad(ctx, "1", db) // a second load would close loading again: panic
		errs <- err
	}()
	waitJoined(t, 1)
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	wantSpans(t, "shared flight", rec.take(),
		`get-or-load(key="1" keys=1 parent=- ended=true err=<nil> origin=loader shared=false)`,
		`load(key="1" keys=1 parent=get-or-load ended=true err=<nil> origin=none shared=false)`,
		`get-or-load(key="1" keys=1 parent=- ended=true err=<nil> origin=loader shared=true)`)
}

// waitJoined waits until n goroutines wait in Cache.flight for a flight
// they joined: blocked in flight's own select (a leader with a context
// that cannot be cancelled runs the flight below flight's frame).
func waitJoined(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		buf = buf[:runtime.Stack(buf[:cap(buf)], true)]
		joined := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			lines := strings.Split(g, "\n")
			// The goroutine's header, then its frames (runtime frames
			// hidden): the top one is the function blocked in the select.
			if len(lines) >= 2 && strings.Contains(lines[0], " [select") && strings.Contains(lines[1], ").flight(") {
				joined++
			}
		}
		if joined >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines joined a flight, want %d:\n%s", joined, n, buf)
		}
		time.Sleep(time.Millisecond) // polling a condition, not waiting for one to settle
	}
}
