package prefork

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/sockopt"
)

// Defaults applied to a zero Config.
const (
	// DefaultStartTimeout is how long a new child has to start accepting.
	DefaultStartTimeout = 30 * time.Second
	// DefaultStopTimeout is how long a child has to exit after SIGTERM
	// before it is killed.
	DefaultStopTimeout = 30 * time.Second
	// DefaultRestartDelay is the wait before a child that died is started
	// again; it doubles, up to MaxRestartDelay, while children die within
	// a second of starting.
	DefaultRestartDelay = 100 * time.Millisecond
	// MaxRestartDelay bounds the growing restart delay.
	MaxRestartDelay = 5 * time.Second
)

// The contract between a Supervisor and the children it starts.
const (
	envSlot  = "CONNOPT_PREFORK_SLOT"
	listenFD = 3 // the slot's listening socket (ExtraFiles[0])
	readyFD  = 4 // a pipe: one byte when the child first accepts (ExtraFiles[1])
)

// ErrInvalidConfig is matched by the error New returns for a Config value
// that has no meaning. It is sockopt.ErrInvalidConfig.
var ErrInvalidConfig = sockopt.ErrInvalidConfig

// ErrNotChild is returned by Listener in a process a Supervisor did not
// start.
var ErrNotChild = errors.New("prefork: not a child of a prefork supervisor")

// Logger receives the supervisor's messages. *log.Logger and
// fasthttp.Logger implement it.
type Logger interface {
	Printf(format string, args ...any)
}

// Config configures a Supervisor. Every zero value means the documented
// default; negative durations and counts are ErrInvalidConfig.
type Config struct {
	// Children is the number of child processes, each with a listening
	// socket of its own on the address. Zero means runtime.NumCPU().
	Children int
	// Listener configures the listening sockets, which the parent opens
	// (with SO_REUSEPORT, whatever ReusePort says) and keeps open for as
	// long as it runs; the children accept on them. Its Accept-side fields
	// (WrapConns, Nagle, MaxAcceptBackoff) are what the children pass to
	// Listener.
	Listener listener.Config
	// StartTimeout bounds how long a new child may take to call Accept
	// for the first time. Zero means DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout bounds how long a child may take to exit after SIGTERM;
	// it is then killed. Zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// RestartDelay is the first wait before restarting a child that died.
	// Zero means DefaultRestartDelay.
	RestartDelay time.Duration
	// DrainTimeout is, for ServeFasthttp's children, how long keep-alive
	// connections get to send one more request once the child is told to
	// stop (server.Config.DrainTimeout's meaning). Zero means 1 s; negative
	// closes idle connections at once, as fasthttp's Shutdown does.
	DrainTimeout time.Duration
	// DisableSignals stops Run from acting on SIGINT and SIGTERM (stop)
	// and SIGHUP (Upgrade).
	DisableSignals bool
	// Logger receives one line per child started, died, restarted, and
	// per generation ready or stopped. Nil means the log package's
	// standard logger.
	Logger Logger
}

// Stats are a Supervisor's counters.
type Stats struct {
	Generation     int    // the serving generation, 1 once the first is ready
	Restarts       uint64 // children started again after dying
	Upgrades       uint64 // hand-overs completed
	FailedUpgrades uint64 // hand-overs abandoned (the old generation kept serving)
}

// ErrUpgradeInProgress is returned by Upgrade (and logged for a SIGHUP)
// while a new generation is still starting: the second request is refused,
// not queued; ask again once the hand-over has ended.
var ErrUpgradeInProgress = errors.New("prefork: an upgrade is in progress")

// errNotRunning is Upgrade's error before Run and after it returned.
var errNotRunning = errors.New("prefork: upgrade: the supervisor is not running")

// Supervisor is the parent process: it owns the listening sockets, starts
// Children processes of its own executable to serve on them, restarts a
// child that dies, hands over to a new generation on Upgrade (SIGHUP), and
// stops them all on SIGINT or SIGTERM.
//
// Run is one event loop: signals, child exits, readiness, Upgrade calls and
// timers are handled in every state, a hand-over being a state (the new
// generation starting) rather than a call that blocks the loop, so a stop
// or a child's death during a hand-over is acted on at once.
type Supervisor struct {
	cfg   Config
	log   Logger
	exe   string
	lns   []*listener.Listener
	files []*os.File

	exits    chan *child      // a child's process has been waited for
	readies  chan *child      // a child called Accept for the first time
	restarts chan int         // a slot's restart delay has passed
	kills    chan *retirement // a retiring group's StopTimeout has passed
	upgrades chan chan error
	done     chan struct{}

	running atomic.Bool // Run has been called
	closed  sync.Once

	mu       sync.Mutex
	gen      int
	current  []*child
	restartN atomic.Uint64
	upgraded atomic.Uint64
	failed   atomic.Uint64
}

type child struct {
	slot, gen int
	cmd       *exec.Cmd
	started   time.Time
	err       error // the Wait result, set before the exit event
	// The loop's own bookkeeping (only Run's goroutine touches these).
	ready   bool
	retired *retirement // the group it was stopped with; nil while it serves or starts
}

// handover is a generation starting: it becomes the serving one when every
// child has accepted, and is abandoned if one exits or StartTimeout passes.
type handover struct {
	gen      int
	children []*child
	ready    int
	timer    *time.Timer
	replies  []chan error // Upgrade calls waiting for the outcome
	first    bool         // the first generation: Run fails if it does
}

// retirement is a group of children sent SIGTERM together: the old
// generation after a hand-over, or a new one abandoned. Those still running
// after StopTimeout are killed.
type retirement struct {
	what    string // for the log: "generation 1"
	left    map[*child]bool
	timer   *time.Timer
	replies []chan error // Upgrade calls that wait for the old generation to exit
}

// New opens the listening sockets (Children of them, with SO_REUSEPORT) on
// address and prepares a Supervisor; Run starts the children. network is as
// for listener.Listen. On error nothing is left open.
func New(network, address string, cfg Config) (*Supervisor, error) {
	if err := confcheck.NonNegative(
		confcheck.Int("Children", cfg.Children),
		confcheck.Duration("StartTimeout", cfg.StartTimeout),
		confcheck.Duration("StopTimeout", cfg.StopTimeout),
		confcheck.Duration("RestartDelay", cfg.RestartDelay),
	); err != nil {
		return nil, fmt.Errorf("prefork: %w", err)
	}
	cfg.Children = cmp.Or(cfg.Children, runtime.NumCPU())
	cfg.StartTimeout = cmp.Or(cfg.StartTimeout, DefaultStartTimeout)
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, DefaultStopTimeout)
	cfg.RestartDelay = cmp.Or(cfg.RestartDelay, DefaultRestartDelay)
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("prefork: finding the executable to start: %w", err)
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, exe: exe,
		exits: make(chan *child), readies: make(chan *child), restarts: make(chan int), kills: make(chan *retirement),
		upgrades: make(chan chan error), done: make(chan struct{})}
	if s.log == nil {
		s.log = log.Default()
	}
	lns, err := listener.ListenShards(network, address, cfg.Children, cfg.Listener)
	if err != nil {
		return nil, fmt.Errorf("prefork: %w", err)
	}
	s.lns = lns
	for _, ln := range lns {
		f, err := ln.File()
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("prefork: %w", err)
		}
		s.files = append(s.files, f)
	}
	return s, nil
}

// Addr is the address the children serve on.
func (s *Supervisor) Addr() net.Addr { return s.lns[0].Addr() }

// Pids are the process IDs of the serving generation's children, by slot
// (0 for a slot whose child is being restarted).
func (s *Supervisor) Pids() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids := make([]int, len(s.current))
	for i, c := range s.current {
		if c != nil && c.cmd.Process != nil {
			pids[i] = c.cmd.Process.Pid
		}
	}
	return pids
}

// Stats returns the supervisor's counters.
func (s *Supervisor) Stats() Stats {
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	return Stats{Generation: gen, Restarts: s.restartN.Load(), Upgrades: s.upgraded.Load(), FailedUpgrades: s.failed.Load()}
}

// Upgrade hands over to a new generation, as SIGHUP does: it starts
// Children new processes of the executable (the file now at its path, so a
// binary replaced on disk takes over) on the same sockets, waits until each
// has called Accept, then stops the old ones with SIGTERM. The sockets stay
// open throughout, so a connection waiting in an accept queue is accepted
// by whichever generation comes first: none is reset. If a new child exits
// or does not accept within StartTimeout, the new generation is stopped,
// the old one keeps serving, and the error says why. Upgrade returns once
// the old generation has exited; it fails with ErrUpgradeInProgress while
// another hand-over is starting, and if Run is not running or stops first.
func (s *Supervisor) Upgrade() error {
	if !s.running.Load() {
		return errNotRunning
	}
	reply := make(chan error, 1)
	select {
	case s.upgrades <- reply:
	case <-s.done:
		return errNotRunning
	}
	return <-reply
}

// Run starts the children and supervises them until ctx is done or, unless
// DisableSignals, SIGINT or SIGTERM arrives, in whatever state it is (a
// hand-over starting included). The stop closes the supervisor's copies of
// the sockets first, so that once the children have closed theirs new
// connections are refused rather than queued for nobody; then every child
// gets SIGTERM (and SIGKILL after StopTimeout; a second SIGINT or SIGTERM
// kills at once). If the first generation cannot start (a child exits, or
// does not accept within StartTimeout), Run stops the others and returns
// why. Run is called once.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("prefork: Run called twice")
	}
	defer close(s.done)
	defer s.closeSockets()
	var sigs chan os.Signal
	if !s.cfg.DisableSignals {
		sigs = make(chan os.Signal, 4)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
	}
	r := &run{s: s, delay: make([]time.Duration, s.cfg.Children), retiring: map[*retirement]bool{}}
	s.mu.Lock()
	s.current = make([]*child, s.cfg.Children)
	s.mu.Unlock()
	r.beginHandover(nil, true) // a failure is in r.firstErr
	for r.firstErr == nil {
		var startTimeout <-chan time.Time
		if r.pending != nil {
			startTimeout = r.pending.timer.C
		}
		select {
		case <-ctx.Done():
			r.stop(sigs)
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := r.beginHandover(nil, false); err != nil {
					s.log.Printf("%v", err)
				}
				continue
			}
			s.log.Printf("prefork: %v: stopping", sig)
			r.stop(sigs)
			return r.firstErr
		case reply := <-s.upgrades:
			if err := r.beginHandover(reply, false); err != nil {
				reply <- err
			}
		case c := <-s.readies:
			r.ready(c)
		case c := <-s.exits:
			r.exited(c)
		case slot := <-s.restarts:
			r.restart(slot)
		case <-startTimeout:
			h := r.pending
			var slow *child
			for _, c := range h.children {
				if !c.ready {
					slow = c
					break
				}
			}
			r.abandon(fmt.Errorf("child %d (pid %d) did not accept within %v", slow.slot, slow.cmd.Process.Pid, s.cfg.StartTimeout))
		case g := <-s.kills:
			r.kill(g)
		}
	}
	r.stop(sigs)
	return r.firstErr
}

// run is the state of Run's loop.
type run struct {
	s        *Supervisor
	pending  *handover // a generation starting, or nil
	retiring map[*retirement]bool
	delay    []time.Duration // per slot, the last restart delay
	firstErr error           // the first generation failed: Run returns it
}

// beginHandover starts a new generation, the first one with first. With a
// hand-over already starting, the request is refused (reply, if not nil,
// is the caller's to answer with the error).
func (r *run) beginHandover(reply chan error, first bool) error {
	s := r.s
	if r.pending != nil {
		err := fmt.Errorf("%w: generation %d is still starting; the request is refused", ErrUpgradeInProgress, r.pending.gen)
		if reply == nil {
			err = fmt.Errorf("prefork: SIGHUP: %w", err)
		}
		return err
	}
	s.mu.Lock()
	gen := s.gen + 1
	s.mu.Unlock()
	h := &handover{gen: gen, first: first, timer: time.NewTimer(s.cfg.StartTimeout)}
	if reply != nil {
		h.replies = append(h.replies, reply)
	}
	r.pending = h
	for slot := range s.cfg.Children {
		c, err := s.start(slot, gen)
		if err != nil {
			r.abandon(err)
			return nil // abandon answered the callers
		}
		h.children = append(h.children, c)
	}
	return nil
}

func (r *run) ready(c *child) {
	h := r.pending
	if c.ready || h == nil || c.gen != h.gen || c.retired != nil {
		c.ready = true // a restarted child of the serving generation
		return
	}
	c.ready = true
	h.ready++
	if h.ready < len(h.children) {
		return
	}
	// Every new child accepts: it is now the serving generation.
	s := r.s
	h.timer.Stop()
	r.pending = nil
	s.mu.Lock()
	old := s.current
	s.current = h.children
	s.gen = h.gen
	s.mu.Unlock()
	s.log.Printf("prefork: generation %d ready on %s: pids %v", h.gen, s.Addr(), pidsOf(h.children))
	if h.first {
		return
	}
	s.upgraded.Add(1)
	r.retire(fmt.Sprintf("generation %d", h.gen-1), old, h.replies)
}

// abandon stops the generation starting; the serving one goes on. The
// callers waiting for it get err at once.
func (r *run) abandon(err error) {
	h := r.pending
	r.pending = nil
	h.timer.Stop()
	err = fmt.Errorf("prefork: generation %d: %w", h.gen, err)
	if h.first {
		r.firstErr = err
	} else {
		r.s.failed.Add(1)
		err = fmt.Errorf("prefork: upgrade abandoned, the serving generation goes on: %w", err)
		r.s.log.Printf("%v", err)
	}
	for _, reply := range h.replies {
		reply <- err
	}
	r.retire(fmt.Sprintf("abandoned generation %d", h.gen), h.children, nil)
}

// retire sends SIGTERM to cs (nil entries skipped) and arms their
// StopTimeout; replies are answered when the last has exited.
func (r *run) retire(what string, cs []*child, replies []chan error) {
	g := &retirement{what: what, left: map[*child]bool{}, replies: replies}
	for _, c := range cs {
		if c != nil && c.retired == nil {
			c.retired = g
			g.left[c] = true
			c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	if len(g.left) == 0 {
		r.retired(g)
		return
	}
	r.retiring[g] = true
	s := r.s
	g.timer = time.AfterFunc(s.cfg.StopTimeout, func() {
		select {
		case s.kills <- g:
		case <-s.done:
		}
	})
}

// retired ends a group whose children have all exited.
func (r *run) retired(g *retirement) {
	delete(r.retiring, g)
	if g.timer != nil {
		g.timer.Stop()
	}
	r.s.log.Printf("prefork: %s stopped", g.what)
	for _, reply := range g.replies {
		reply <- nil
	}
}

// kill ends the StopTimeout of a group: its children still running are
// killed (their exits arrive as events).
func (r *run) kill(g *retirement) {
	if !r.retiring[g] {
		return
	}
	for c := range g.left {
		r.s.log.Printf("prefork: child %d (pid %d) still running after %v: killing it", c.slot, c.cmd.Process.Pid, r.s.cfg.StopTimeout)
		c.cmd.Process.Kill()
	}
}

func (r *run) exited(c *child) {
	s := r.s
	switch {
	case c.retired != nil:
		g := c.retired
		delete(g.left, c)
		if len(g.left) == 0 && r.retiring[g] {
			r.retired(g)
		}
	case r.pending != nil && c.gen == r.pending.gen:
		what := "exited before accepting"
		if c.ready {
			what = "exited during the hand-over"
		}
		c.retired = &retirement{left: map[*child]bool{}} // gone already: nothing to stop
		r.abandon(fmt.Errorf("child %d (pid %d) %s: %v", c.slot, c.cmd.Process.Pid, what, exitText(c.err)))
	default:
		s.mu.Lock()
		serving := s.current[c.slot] == c
		if serving {
			s.current[c.slot] = nil
		}
		s.mu.Unlock()
		if !serving {
			return
		}
		d := r.scheduleRestart(c.slot, time.Since(c.started))
		s.log.Printf("prefork: child %d (pid %d) of generation %d exited: %v; restarting in %v", c.slot, c.cmd.Process.Pid, c.gen, exitText(c.err), d)
	}
}

// scheduleRestart arms the restart of slot after its delay: RestartDelay,
// doubling up to MaxRestartDelay while its children live less than a
// second (a start that failed lived 0). It returns the delay.
func (r *run) scheduleRestart(slot int, lived time.Duration) time.Duration {
	s := r.s
	d := r.delay[slot]
	if d == 0 || lived > time.Second {
		d = s.cfg.RestartDelay
	} else {
		d = min(2*d, MaxRestartDelay)
	}
	r.delay[slot] = d
	time.AfterFunc(d, func() {
		select {
		case s.restarts <- slot:
		case <-s.done:
		}
	})
	return d
}

func (r *run) restart(slot int) {
	s := r.s
	s.mu.Lock()
	gen, busy := s.gen, s.current[slot] != nil
	s.mu.Unlock()
	if busy {
		return // a hand-over filled the slot meanwhile
	}
	c, err := s.start(slot, gen)
	if err != nil {
		d := r.scheduleRestart(slot, 0)
		s.log.Printf("prefork: restarting slot %d: %v; again in %v", slot, err, d)
		return
	}
	s.restartN.Add(1)
	s.log.Printf("prefork: slot %d restarted: pid %d", slot, c.cmd.Process.Pid)
	s.mu.Lock()
	s.current[slot] = c
	s.mu.Unlock()
}

// stop is the full stop: the sockets' copies closed first, every child
// sent SIGTERM, all waited for (SIGKILL after StopTimeout, or at once on a
// second SIGINT or SIGTERM).
func (r *run) stop(sigs chan os.Signal) {
	s := r.s
	s.closeSockets()
	if h := r.pending; h != nil {
		r.pending = nil
		h.timer.Stop()
		for _, reply := range h.replies {
			reply <- errors.New("prefork: upgrade: the supervisor stopped")
		}
		r.retire(fmt.Sprintf("starting generation %d", h.gen), h.children, nil)
	}
	s.mu.Lock()
	cur := s.current
	s.current = make([]*child, len(cur))
	s.mu.Unlock()
	r.retire("serving generation", cur, nil)
	deadline := time.NewTimer(s.cfg.StopTimeout)
	defer deadline.Stop()
	killAll := func() {
		for g := range r.retiring {
			r.kill(g)
		}
	}
	for len(r.retiring) > 0 {
		select {
		case c := <-s.exits:
			r.exited(c)
		case c := <-s.readies:
			c.ready = true
		case <-s.restarts:
		case reply := <-s.upgrades:
			reply <- errors.New("prefork: upgrade: the supervisor is stopping")
		case g := <-s.kills:
			r.kill(g)
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				s.log.Printf("prefork: %v again: killing the children", sig)
				killAll()
			}
		case <-deadline.C:
			killAll()
		}
	}
	s.log.Printf("prefork: stopped")
}

// start execs one child for slot: the executable with this process's
// arguments and environment, the slot's socket as descriptor 3 and the
// write end of its ready pipe as descriptor 4.
func (s *Supervisor) start(slot, gen int) (*child, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        s.exe,
		Args:        os.Args,
		Env:         append(os.Environ(), envSlot+"="+strconv.Itoa(slot)),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{s.files[slot], w},
		SysProcAttr: procAttr(),
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("starting %s: %w", s.exe, err)
	}
	c := &child{slot: slot, gen: gen, cmd: cmd, started: time.Now()}
	go func() {
		// One byte: the child accepts. EOF: it exited first.
		var b [1]byte
		n, _ := r.Read(b[:])
		r.Close()
		if n == 1 {
			select {
			case s.readies <- c:
			case <-s.done:
			}
		}
	}()
	go func() {
		c.err = cmd.Wait()
		select {
		case s.exits <- c:
		case <-s.done:
		}
	}()
	return c, nil
}

// Close closes the sockets of a Supervisor whose Run was never called
// (Run closes them when it returns).
func (s *Supervisor) Close() error {
	if s.running.Load() {
		return errors.New("prefork: Close while Run runs: stop Run's context instead")
	}
	s.closeSockets()
	return nil
}

func (s *Supervisor) closeSockets() {
	s.closed.Do(func() {
		for _, f := range s.files {
			f.Close()
		}
		for _, ln := range s.lns {
			ln.Close()
		}
	})
}

func pidsOf(cs []*child) []int {
	pids := make([]int, len(cs))
	for i, c := range cs {
		pids[i] = c.cmd.Process.Pid
	}
	return pids
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
