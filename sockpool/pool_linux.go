package sockpool

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/rawsock"
)

type nsID struct{ dev, ino uint64 }

// poolImpl is the state only the refill goroutine touches after start.
type poolImpl struct {
	path   string // "" for the caller's namespace, which cannot be renamed away
	handle netns.NsHandle
	id     nsID
	bad    bool // the namespace is gone or replaced (and not reopened)
}

func handleID(h netns.NsHandle) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

func (p *Pool) start() error {
	path, err := nsexec.Path(p.cfg.Namespace)
	if err != nil {
		return fmt.Errorf("sockpool: %w", err)
	}
	h, err := nsexec.Open(p.cfg.Namespace)
	if err != nil {
		return fmt.Errorf("sockpool: %w", err)
	}
	id, err := handleID(h)
	if err != nil {
		h.Close()
		return fmt.Errorf("sockpool: %s: %w", path, err)
	}
	p.impl = poolImpl{path: path, handle: h, id: id}
	ready := make(chan error, 1)
	p.wg.Add(1)
	go p.run(ready)
	if err := <-ready; err != nil {
		p.wg.Wait()
		p.drain()
		return err
	}
	return nil
}

// run owns a locked OS thread inside the namespace for the pool's life:
// one setns when the pool starts (and one when it reopens a replaced
// namespace), never one per socket or per batch.
func (p *Pool) run(ready chan<- error) {
	defer p.wg.Done()
	leave, err := nsexec.Enter(p.impl.handle)
	if err != nil {
		p.impl.handle.Close()
		ready <- fmt.Errorf("sockpool: %q: %w", p.cfg.Namespace, err)
		return
	}
	defer func() {
		p.impl.handle.Close()
		leave() // on failure the thread stays locked and is discarded
	}()

	if err := p.fill(); err != nil {
		ready <- err
		return
	}
	ready <- nil

	tick := time.NewTicker(p.cfg.CheckInterval)
	defer tick.Stop()
	for {
		kicked := false
		select {
		case <-p.done:
			return
		case <-p.kick:
			kicked = true
		case <-tick.C:
		}
		if !p.check() {
			continue
		}
		if kicked || len(p.sockets) < p.cfg.LowWatermark {
			p.fill()
		}
	}
}

// fill brings the pool to Size in batches of at most Batch sockets. It runs
// on the pool's thread, inside the namespace.
func (p *Pool) fill() error {
	for len(p.sockets) < p.cfg.Size {
		select {
		case <-p.done:
			return nil
		default:
		}
		n := min(p.cfg.Batch, p.cfg.Size-len(p.sockets))
		var cookie uint64
		for i := range n {
			fd, err := rawsock.NewTCPSocket(p.cfg.IPv6, p.opts)
			if err != nil {
				err = fmt.Errorf("sockpool: creating a socket in %s: %w", p.label, err)
				p.setErr(err)
				return err
			}
			if i == 0 {
				if cookie, err = rawsock.NetnsCookie(fd); err != nil {
					rawsock.Close(fd)
					return fmt.Errorf("sockpool: %w", err)
				}
				p.lastCookie.Store(cookie)
			}
			p.created.Add(1)
			s := newSocket(fd, p.cfg.IPv6, cookie)
			select {
			case p.sockets <- s:
			default: // full: Gets are slower than this refill
				s.Close()
				p.discarded.Add(1)
			}
		}
		p.refills.Add(1)
	}
	if !p.impl.bad {
		p.setErr(nil) // a creation failure (EMFILE, say) has passed
	}
	return nil
}

// check reports whether the namespace's name or path still leads to the
// namespace the pool's thread is in, and acts when it does not.
func (p *Pool) check() bool {
	if p.impl.path == "" {
		return true
	}
	var st unix.Stat_t
	err := unix.Stat(p.impl.path, &st)
	if err == nil && (nsID{st.Dev, st.Ino}) == p.impl.id {
		return !p.impl.bad
	}
	if err == nil && p.cfg.Reopen {
		if rerr := p.reopen(); rerr == nil {
			return true
		}
	}
	if !p.impl.bad {
		p.impl.bad = true
		p.nsChanges.Add(1)
		p.drain()
		if err != nil {
			p.setErr(fmt.Errorf("%w: %s: %w", ErrNamespaceGone, p.impl.path, err))
		} else {
			p.setErr(fmt.Errorf("%w: %s now leads to another namespace", ErrNamespaceChanged, p.impl.path))
		}
	}
	return false
}

// reopen moves the pool's thread into the namespace the path leads to now.
func (p *Pool) reopen() error {
	h, err := netns.GetFromPath(p.impl.path)
	if err != nil {
		return err
	}
	id, err := handleID(h)
	if err == nil {
		err = nsexec.Switch(h)
	}
	if err != nil {
		h.Close()
		return errors.Join(ErrNamespaceChanged, err)
	}
	p.impl.handle.Close()
	p.impl.handle, p.impl.id = h, id
	if !p.impl.bad {
		p.nsChanges.Add(1)
	}
	p.impl.bad = false
	p.drain()
	p.setErr(nil)
	return nil
}
