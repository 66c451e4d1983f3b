// Package childproc makes the processes a program starts (a hub under
// test, a broker, a load generator's peer) end with the program that
// started them, even when it is killed and runs no cleanup: a test binary
// that go test kills at its timeout, or a bench killed by its operator,
// would otherwise leave hubs holding ports, files and the bench lock.
package childproc

import "os/exec"

// DieWithParent arranges for cmd's process, once started, to be killed
// when the process that started it dies. Call it before cmd.Start. On
// Linux the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG), strictly when
// the thread that started the child exits: Go keeps its threads for the
// life of the process unless a goroutine exits while locked to one, which
// nothing that starts children here does. Elsewhere it does nothing.
func DieWithParent(cmd *exec.Cmd) { dieWithParent(cmd) }
