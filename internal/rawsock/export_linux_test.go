package rawsock

// SetTestHookConnected sets the hook Connect runs after its wait, for the
// external test package (which can import testkit, which imports rawsock).
func SetTestHookConnected(f func()) { testHookConnected = f }
