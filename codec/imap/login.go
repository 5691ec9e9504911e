package imap

import "doorman/codec/login"

// The types this package shares with the other protocols' codecs and the engine live in
// package login; these names keep the IMAP codec reading as it did.
type (
	SessionInfo    = login.SessionInfo
	ActionKind     = login.ActionKind
	Action         = login.Action
	IDParam        = login.IDParam
	Credentials    = login.Credentials
	AuthStatus     = login.AuthStatus
	AuthResult     = login.AuthResult
	BackendParams  = login.BackendParams
	BackendIDField = login.BackendIDField
	BackendOutcome = login.BackendOutcome
	BackendResult  = login.BackendResult
)

const (
	ActWrite    = login.ActWrite
	ActAuth     = login.ActAuth
	ActClose    = login.ActClose
	ActID       = login.ActID
	ActStartTLS = login.ActStartTLS
	ActSecret   = login.ActSecret

	AuthOK          = login.AuthOK
	AuthFailed      = login.AuthFailed
	AuthTempFail    = login.AuthTempFail
	AuthUnavailable = login.AuthUnavailable
	AuthServerBug   = login.AuthServerBug
	AuthDisabled    = login.AuthDisabled
	AuthAuthzFailed = login.AuthAuthzFailed

	BackendPending       = login.BackendPending
	BackendOK            = login.BackendOK
	BackendAuthFailed    = login.BackendAuthFailed
	BackendTempFail      = login.BackendTempFail
	BackendProtocolError = login.BackendProtocolError
	BackendRemoteConfig  = login.BackendRemoteConfig
	BackendInternal      = login.BackendInternal
	BackendStartTLS      = login.BackendStartTLS
)

var (
	_ login.Frontend = (*Session)(nil)
	_ login.Backend  = (*BackendLogin)(nil)
)
