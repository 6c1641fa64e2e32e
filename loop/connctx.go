package loop

import "time"

// conn is the context.Context netpoll hands back to every callback for its
// connection (onPrepare returns it). It carries no deadline, cancellation or
// values: it only lets a read task find its conn with a type assertion, and
// costs no field (an embedded context.Background() was 16 bytes on every
// connection).

func (*conn) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*conn) Done() <-chan struct{}       { return nil }
func (*conn) Err() error                  { return nil }
func (*conn) Value(any) any               { return nil }
