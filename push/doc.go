// Package push sends the push wakes binaries ask for (docs/protocol.md, "Push wakes")
// through FCM HTTP v1.
//
// A wake is a high-priority, data-less message to one device token. The body
// POSTed to {endpoint}/v1/projects/{project_id}/messages:send is exactly
//
//	{"message":{"token":"<device token>","android":{"priority":"high"}}}
//
// authorised with an OAuth2 access token that a service account's key buys
// through the JWT-bearer grant (golang.org/x/oauth2), cached until shortly
// before it expires.
//
// Admission never blocks and never queues: a wake whose platform is not
// "fcm", whose token is empty, whose server-id's bucket is empty (one per
// 10 s, burst 6) or that finds 32 sends already in flight is dropped and
// counted. Device tokens, credentials and access tokens are never logged; a
// device token may appear as an 8-hex SHA-256 fingerprint.
package push
