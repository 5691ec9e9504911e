package submission

// Every reply the client side puts on the wire, in one place. They are Dovecot 2.3.21's
// (submission-login on top of lib-smtp's server), word for word, with the file each comes
// from. Each is a whole reply line without its CRLF: the status decides whether it counts
// as a bad command (see Session.answer).

const (
	// src/lib-smtp/smtp-server-command.c: smtp_server_command_execute
	txtUnknownCommand = "500 5.5.1 Unknown command"
	txtAuthRequired   = "530 5.7.0 Authentication required."

	// src/lib-smtp/smtp-server-connection.c: smtp_server_connection_handle_input, for
	// what smtp-command-parser.c refuses (a bad name, a bad byte, a duplicate space).
	txtInvalidSyntax = "500 5.5.2 Invalid command syntax"
	txtLineTooLong   = "500 5.5.2 Line too long"

	// src/lib-smtp/smtp-server-cmd-helo.c, smtp-server-reply.c (EHLO reply)
	txtMissingHostname = "501 Missing hostname"

	// src/lib-smtp/smtp-server-cmd-{noop,rset,quit,starttls}.c
	txtOK            = "250 2.0.0 OK"
	txtInvalidString = "501 5.5.4 Invalid string parameter: "
	txtInvalidParams = "501 5.5.4 Invalid parameters"
	txtBye           = "221 2.0.0 Bye"
	txtStartTLSOK    = "220 2.0.0 Begin TLS negotiation now."
	txtTLSActive     = "502 5.5.1 TLS is already active."
	txtTLSDisabled   = "502 5.5.1 TLS support is not enabled."

	// src/lib-smtp/smtp-server-cmd-xclient.c: XCLIENT from a client not in
	// login_trusted_networks (SessionInfo.Trusted) gets this; see server_xclient.go
	// for the trusted ones.
	txtXCLIENTUntrusted = "550 5.7.14 You are not from trusted IP"

	// src/lib-smtp/smtp-server-cmd-auth.c
	txtAuthMissingMech     = "501 5.5.4 Missing SASL mechanism parameter"
	txtAuthInvalidResponse = "500 5.5.2 Invalid AUTH response syntax"

	// src/lib-smtp/smtp-server-connection.c: smtp_server_connection_terminate sends
	// "421 <code> <hostname> <text>" and closes.
	codeTooManyBad    = "4.7.0"
	txtTooManyBad     = "Too many invalid commands." // smtp-server-command.c
	codeInactivity    = "4.4.2"                      // submission-login/client.c
	txtInactivity     = "Disconnected for inactivity."
	txtInactivityAuth = "Disconnected for inactivity during authentication." // login-common/client-common.c
	// Doorman's own: Dovecot has no limit on failed logins per connection.
	codeTooManyAuth = "4.7.0"
	txtTooManyAuth  = "Too many invalid authentication attempts."

	// src/submission-login/client-authenticate.c: submission_client_auth_result maps
	// login-common's results to these; the texts are login-common's
	// (sasl-server.c, client-common-auth.c, login-common.h) and the auth process's
	// (auth-request-handler.c, for bad base64).
	txtUnsupportedMech    = "504 5.5.4 Unsupported authentication mechanism."
	txtPlaintextDisabled  = "523 5.7.10 Plaintext authentication disabled."
	txtAuthAborted        = "501 5.5.2 Authentication aborted by client."
	txtBadBase64Initial   = "501 5.5.2 Invalid base64 data in initial response"
	txtBadBase64Continued = "501 5.5.2 Invalid base64 data in continued response"
	txtAuthFailed         = "535 5.7.8 Authentication failed."

	// Results of a login (Resume): the status and enhanced code per login.AuthStatus,
	// and the default texts. Dovecot appends " [<host>:<time>]" to the tempfail text;
	// the codec has no clock, so an engine that wants it passes the whole text in
	// AuthResult.Text. Proxy failures all read LOGIN_PROXY_FAILURE_MSG
	// (submission-proxy.c: submission_proxy_send_failure_reply).
	txtLoggedIn          = "235 2.7.0 Logged in." // lib-smtp smtp-server-cmd-auth.c; proxy_noauth
	codeFailed           = "535 5.7.8 "
	codeTempFail         = "454 4.7.0 "
	codeDisabled         = "525 5.7.13 "
	defAuthFailed        = "Authentication failed."
	defTempFailed        = "Temporary authentication failure."
	defAccountUnavail    = "Account is temporarily unavailable."
	defLoginDisabled     = "Login disabled for this user"
	defAuthzFailed       = "Authorization failed"
	txtChallengeEmpty    = "334 \r\n"
	txtChallengeUsername = "334 VXNlcm5hbWU6\r\n" // "Username:", src/auth/mech-login.c
	txtChallengePassword = "334 UGFzc3dvcmQ6\r\n" // "Password:"
)

// EHLO keywords before login, in the order of submission-login's cmd_helo_reply with
// the default submission_backend_capabilities (8BITMIME only) and no workarounds.
// BINARYMIME, DSN and VRFY need backend capabilities Doorman doesn't configure;
// XCLIENT, for trusted clients only, comes after PIPELINING (ehloXCLIENT).
const (
	ehlo8BitMIME  = "250-8BITMIME\r\n"
	ehloAuth      = "250-AUTH PLAIN LOGIN\r\n"
	ehloMiddle    = "250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n"
	ehloSize      = "250-SIZE"
	ehloStartTLS  = "250-STARTTLS\r\n"
	ehloPipelined = "250 PIPELINING\r\n"
	// ehloPipelinedMore: PIPELINING when XCLIENT follows it.
	ehloPipelinedMore = "250-PIPELINING\r\n"
)
