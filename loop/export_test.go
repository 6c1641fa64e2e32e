package loop

import "time"

// Lifetime tests run in fractions of a second; the command keeps the floor.
func init() { minBinaryLifetime = 100 * time.Millisecond }
