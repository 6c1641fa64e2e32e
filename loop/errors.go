package loop

import "errors"

var (
	errContinuation = errors.New("continuation frame with no message started")
	errInterleaved  = errors.New("new data frame inside a fragmented message")
)
