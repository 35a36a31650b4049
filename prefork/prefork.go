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
	Generation     int    // the serving generation, 1 at the first start
	Restarts       uint64 // children started again after dying
	Upgrades       uint64 // hand-overs completed
	FailedUpgrades uint64 // hand-overs abandoned (the old generation kept serving)
}

// Supervisor is the parent process: it owns the listening sockets, starts
// Children processes of its own executable to serve on them, restarts a
// child that dies, hands over to a new generation on Upgrade (SIGHUP), and
// stops them all on SIGINT or SIGTERM.
type Supervisor struct {
	cfg   Config
	log   Logger
	exe   string
	lns   []*listener.Listener
	files []*os.File

	exits    chan *child
	upgrades chan chan error
	done     chan struct{}

	running atomic.Bool // Run has been called
	closed  sync.Once

	mu       sync.Mutex
	gen      int
	current  []*child
	restarts atomic.Uint64
	upgraded atomic.Uint64
	failed   atomic.Uint64
}

type child struct {
	slot, gen int
	cmd       *exec.Cmd
	started   time.Time
	ready     chan struct{} // closed when the child first accepts
	exited    chan struct{} // closed when the process has been waited for
	err       error         // the Wait result, set before exited closes
	stopping  atomic.Bool   // asked to stop: its exit is not a failure
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
		exits: make(chan *child), upgrades: make(chan chan error), done: make(chan struct{})}
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
	return Stats{Generation: gen, Restarts: s.restarts.Load(), Upgrades: s.upgraded.Load(), FailedUpgrades: s.failed.Load()}
}

// Upgrade hands over to a new generation, as SIGHUP does: it starts
// Children new processes of the executable (the file now at its path, so a
// binary replaced on disk takes over) on the same sockets, waits until each
// has called Accept, then stops the old ones with SIGTERM. The sockets stay
// open throughout, so a connection waiting in an accept queue is accepted
// by whichever generation comes first: none is reset. If a new child exits
// or does not accept within StartTimeout, the new generation is stopped,
// the old one keeps serving, and the error says why. Upgrade waits for the
// old generation to exit; it fails if Run is not running.
func (s *Supervisor) Upgrade() error {
	if !s.running.Load() {
		return errors.New("prefork: upgrade: the supervisor is not running")
	}
	reply := make(chan error, 1)
	select {
	case s.upgrades <- reply:
	case <-s.done:
		return errors.New("prefork: upgrade: the supervisor is not running")
	}
	return <-reply
}

// Run starts the children and supervises them until ctx is done or, unless
// DisableSignals, SIGINT or SIGTERM arrives; then every child gets SIGTERM
// (and SIGKILL after StopTimeout) and the sockets are closed. If the first
// generation cannot start (a child exits, or does not accept within
// StartTimeout), Run stops the others and returns why. Run is called once.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("prefork: Run called twice")
	}
	defer s.closeSockets()
	defer close(s.done)
	var hup chan os.Signal
	if !s.cfg.DisableSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	first, err := s.startGeneration()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.current = first
	s.mu.Unlock()

	delay := make([]time.Duration, s.cfg.Children)
	restart := make(chan int)
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			cur := s.current
			s.current = make([]*child, len(cur))
			s.mu.Unlock()
			s.stopAll(cur)
			s.log.Printf("prefork: stopped")
			return nil
		case c := <-s.exits:
			if c.stopping.Load() || !s.isCurrent(c) {
				continue
			}
			lived := time.Since(c.started)
			d := delay[c.slot]
			switch {
			case d == 0 || lived > time.Second:
				d = s.cfg.RestartDelay
			default:
				d = min(2*d, MaxRestartDelay)
			}
			delay[c.slot] = d
			s.log.Printf("prefork: child %d (pid %d) of generation %d exited: %v; restarting in %v", c.slot, c.cmd.Process.Pid, c.gen, exitText(c.err), d)
			s.mu.Lock()
			s.current[c.slot] = nil
			s.mu.Unlock()
			slot := c.slot
			time.AfterFunc(d, func() {
				select {
				case restart <- slot:
				case <-s.done:
				}
			})
		case slot := <-restart:
			s.mu.Lock()
			gen := s.gen
			busy := s.current[slot] != nil
			s.mu.Unlock()
			if busy {
				continue // an upgrade filled the slot meanwhile
			}
			c, err := s.start(slot, gen)
			if err != nil {
				s.log.Printf("prefork: restarting slot %d: %v", slot, err)
				delay[slot] = min(2*max(delay[slot], s.cfg.RestartDelay), MaxRestartDelay)
				time.AfterFunc(delay[slot], func() {
					select {
					case restart <- slot:
					case <-s.done:
					}
				})
				continue
			}
			s.restarts.Add(1)
			s.log.Printf("prefork: slot %d restarted: pid %d", slot, c.cmd.Process.Pid)
			s.mu.Lock()
			s.current[slot] = c
			s.mu.Unlock()
		case reply := <-s.upgrades:
			reply <- s.upgrade()
		case <-hup:
			if err := s.upgrade(); err != nil {
				s.log.Printf("%v", err)
			}
		}
	}
}

func (s *Supervisor) isCurrent(c *child) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.slot < len(s.current) && s.current[c.slot] == c
}

// startGeneration starts one child per slot and waits until all accept. On
// failure it stops those it started and returns why.
func (s *Supervisor) startGeneration() ([]*child, error) {
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	fail := func(cs []*child, err error) ([]*child, error) {
		for _, c := range cs {
			c.stopping.Store(true)
		}
		s.stopAll(cs)
		s.mu.Lock()
		s.gen--
		s.mu.Unlock()
		return nil, fmt.Errorf("prefork: generation %d: %w", gen, err)
	}
	cs := make([]*child, 0, s.cfg.Children)
	for slot := range s.cfg.Children {
		c, err := s.start(slot, gen)
		if err != nil {
			return fail(cs, err)
		}
		cs = append(cs, c)
	}
	deadline := time.NewTimer(s.cfg.StartTimeout)
	defer deadline.Stop()
	for _, c := range cs {
		select {
		case <-c.ready:
		case <-c.exited:
			return fail(cs, fmt.Errorf("child %d (pid %d) exited before accepting: %v", c.slot, c.cmd.Process.Pid, exitText(c.err)))
		case <-deadline.C:
			return fail(cs, fmt.Errorf("child %d (pid %d) did not accept within %v", c.slot, c.cmd.Process.Pid, s.cfg.StartTimeout))
		}
	}
	s.log.Printf("prefork: generation %d ready on %s: pids %v", gen, s.Addr(), pidsOf(cs))
	return cs, nil
}

func (s *Supervisor) upgrade() error {
	next, err := s.startGeneration()
	if err != nil {
		s.failed.Add(1)
		return fmt.Errorf("prefork: upgrade abandoned, the serving generation goes on: %w", err)
	}
	s.mu.Lock()
	old := s.current
	s.current = next
	gen := s.gen
	s.mu.Unlock()
	s.stopAll(old)
	s.upgraded.Add(1)
	s.log.Printf("prefork: generation %d stopped", gen-1)
	return nil
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
	c := &child{slot: slot, gen: gen, cmd: cmd, started: time.Now(),
		ready: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		// One byte: the child accepts. EOF: it exited first.
		var b [1]byte
		if n, _ := r.Read(b[:]); n == 1 {
			close(c.ready)
		}
		r.Close()
	}()
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
		select {
		case s.exits <- c:
		case <-s.done:
		}
	}()
	return c, nil
}

// stopAll sends SIGTERM to every child in cs, waits StopTimeout for them to
// exit, then kills those left and waits for them.
func (s *Supervisor) stopAll(cs []*child) {
	for _, c := range cs {
		if c != nil {
			c.stopping.Store(true)
			c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(s.cfg.StopTimeout)
	defer deadline.Stop()
	for _, c := range cs {
		if c == nil {
			continue
		}
		select {
		case <-c.exited:
		case <-deadline.C:
			s.log.Printf("prefork: child %d (pid %d) still running after %v: killing it", c.slot, c.cmd.Process.Pid, s.cfg.StopTimeout)
			c.cmd.Process.Kill()
			<-c.exited
			// The deadline has fired: kill the rest without waiting again.
			deadline.Reset(0)
		}
	}
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
