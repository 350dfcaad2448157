package auth_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/auth"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// openPTY returns both ends of a new pseudo-terminal, so the prompt is
// exercised on a real terminal whose echo setting can be observed.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { master.Close() })
	var unlock int32
	require.NoError(t, ioctl(master.Fd(), syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)))
	var n uint32
	require.NoError(t, ioctl(master.Fd(), syscall.TIOCGPTN, unsafe.Pointer(&n)))
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

func ioctl(fd uintptr, req uint, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func echoOn(t *testing.T, tty *os.File) bool {
	var tio syscall.Termios
	require.NoError(t, ioctl(tty.Fd(), syscall.TCGETS, unsafe.Pointer(&tio)))
	return tio.Lflag&syscall.ECHO != 0
}

func TestReadPasswordFromTerminalHasNoEcho(t *testing.T) {
	cases := []struct {
		name          string
		first, second string
		want          string
		wantErr       error
	}{
		{"typed twice", "terminal-Pa55phrase", "terminal-Pa55phrase", "terminal-Pa55phrase", nil},
		{"typo in the second", "terminal-Pa55phrase", "terminal-Pa55phrasf", "", auth.ErrPasswordMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			require.True(t, echoOn(t, slave), "a fresh terminal echoes")
			prompts := &testsupport.SyncBuffer{}
			type result struct {
				pw  string
				err error
			}
			done := make(chan result, 1)
			go func() {
				pw, err := auth.ReadPassword(slave, prompts, true)
				done <- result{pw, err}
			}()

			// Type each answer only once its prompt is shown and echo is
			// off, as a person would; what the terminal echoes back to the
			// master side is what a shoulder-surfer would see.
			typeAt := func(promptText, answer string) {
				require.Eventually(t, func() bool {
					return strings.Count(prompts.String(), promptText) == 1 && !echoOn(t, slave)
				}, 5*time.Second, 5*time.Millisecond, "prompt %q with echo off", promptText)
				_, err := master.WriteString(answer + "\n")
				require.NoError(t, err)
			}
			typeAt("Password: ", tc.first)
			typeAt("Password (again): ", tc.second)

			var res result
			select {
			case res = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("ReadPassword did not return")
			}
			if tc.wantErr != nil {
				require.ErrorIs(t, res.err, tc.wantErr)
			} else {
				require.NoError(t, res.err)
			}
			assert.Equal(t, tc.want, res.pw)
			assert.True(t, echoOn(t, slave), "echo is restored afterwards")

			// Nothing typed came back as echo: everything the master side
			// received before a sentinel written now is what the screen
			// showed. The line discipline echoes input when it processes
			// it, which happened before ReadPassword could read it, so any
			// echo precedes the sentinel. (Fd() made the master blocking,
			// so read up to the sentinel rather than to a deadline.)
			_, err := slave.WriteString("END-OF-SCREEN\n")
			require.NoError(t, err)
			var screen []byte
			buf := make([]byte, 4096)
			for !strings.Contains(string(screen), "END-OF-SCREEN") {
				n, err := master.Read(buf)
				require.NoError(t, err)
				screen = append(screen, buf[:n]...)
			}
			assert.NotContains(t, string(screen), tc.first)
			assert.NotContains(t, string(screen), tc.second)
			assert.NotContains(t, prompts.String(), tc.first)
		})
	}
}
