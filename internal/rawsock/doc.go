// Package rawsock holds every raw socket-descriptor operation connopt makes:
// setsockopt and getsockopt on listening and connected sockets, and the
// RawConn.Control plumbing around them.
//
// Keeping fd work in one place means the rest of the tree deals only in
// net.Conn and net.Listener, and every syscall error is wrapped the same way
// (os.NewSyscallError with the syscall's name). Linux is the real
// implementation; other platforms compile and report ErrUnsupported for
// options they cannot set.
package rawsock
