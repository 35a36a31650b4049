//go:build !linux

package sockpool

type poolImpl struct{}

func (p *Pool) start() error { return ErrUnsupported }
