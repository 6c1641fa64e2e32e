package push

// Outcome is what became of one push wake request.
type Outcome int

const (
	Sent             Outcome = iota // FCM accepted the message
	Unregistered                    // FCM says the device token is no longer valid
	SendFailed                      // FCM refused, or the request failed (timeout, redirect, 5xx…)
	TokenFetchFailed                // no access token could be obtained
	Dropped                         // refused at admission: bad request, rate limited, in-flight cap
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	Sent:             "sent",
	Unregistered:     "unregistered",
	SendFailed:       "send_failed",
	TokenFetchFailed: "token_fetch_failed",
	Dropped:          "dropped",
}

func (o Outcome) String() string { return outcomeNames[o] }
