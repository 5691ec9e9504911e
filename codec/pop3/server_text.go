package pop3

// Every text the client side puts on the wire, in one place. They are Dovecot 2.3.21's,
// word for word, with the file each comes from; the few Doorman makes up say so.

const (
	// src/pop3-login/client.c: client_send_reply's prefixes.
	txtOK       = "+OK"
	txtErr      = "-ERR"
	codeTemp    = "[SYS/TEMP]" // POP3_CMD_REPLY_TEMPFAIL
	codeAuth    = "[AUTH]"     // POP3_CMD_REPLY_AUTH_ERROR, unless the text brings its own [code]
	txtNewline  = "\r\n"
	txtCapaTail = ".\r\n"

	// src/pop3-login/client.c
	txtQuit           = "+OK Logging out\r\n"
	txtUnknownCommand = "-ERR Unknown command.\r\n"
	txtTooManyBad     = "-ERR Too many invalid bad commands.\r\n"
	txtXCLIENTIgnored = "+OK You are not from trusted IP - ignoring\r\n"
	txtXCLIENTUpdated = "+OK Updated\r\n"
	txtXCLIENTInvalid = "-ERR Invalid parameters\r\n"
	// client_send_greeting, for a trusted client: "+OK [XCLIENT] <login_greeting>".
	txtGreetingXCLIENT = "[XCLIENT] "

	// src/pop3-login/client-authenticate.c, with src/pop3/pop3-capability.h's
	// POP3_CAPABILITY_REPLY.
	txtCapaHead     = "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
	txtCapaSTLS     = "STLS\r\n"
	txtCapaUSER     = "USER\r\n"
	txtCapaSASL     = "SASL"
	txtMechs        = " PLAIN LOGIN"
	txtMechListHead = "+OK\r\n"
	txtMechList     = "PLAIN\r\nLOGIN\r\n"
	txtUserOK       = "+OK\r\n"
	txtNoUsername   = "-ERR No username given.\r\n"
	txtAPOPDisabled = "-ERR APOP not enabled.\r\n"

	// src/login-common/client-common.c: client_cmd_starttls
	txtSTLSOK       = "+OK Begin TLS negotiation now.\r\n"
	txtTLSActive    = "-ERR TLS is already active.\r\n"
	txtTLSNotEnable = "-ERR TLS support isn't enabled.\r\n"

	// src/login-common/client-common.c: client_read, client_idle_disconnect_timeout
	txtInputFull         = "-ERR Input buffer full, aborting\r\n"
	txtInactivity        = "-ERR Disconnected for inactivity.\r\n"
	txtInactivityAuth    = "-ERR Disconnected for inactivity during authentication.\r\n"
	txtPlaintextDisabled = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"

	// src/login-common/sasl-server.c: sasl_server_auth_begin (MECH_INVALID and
	// MECH_SSL_REQUIRED, both sent as AUTH errors by pop3_client_auth_result)
	txtUnsupportedMech = "-ERR [AUTH] Unsupported authentication mechanism.\r\n"
	txtPlaintextMech   = "-ERR [AUTH] Plaintext authentication disabled.\r\n"

	// src/login-common/client-common-auth.c: sasl_callback, an abort is no AUTH error.
	txtAuthAborted = "-ERR Authentication aborted by client.\r\n"

	// src/auth/auth-request-handler.c (code INVALID_BASE64, an AUTH error).
	txtBadBase64Initial   = "-ERR [AUTH] Invalid base64 data in initial response\r\n"
	txtBadBase64Continued = "-ERR [AUTH] Invalid base64 data in continued response\r\n"

	// SASL challenges, base64 as they go out: "" and, for LOGIN, "Username:" and
	// "Password:" (src/auth/mech-login.c).
	txtChallengeEmpty    = "+ \r\n"
	txtChallengeUsername = "+ VXNlcm5hbWU6\r\n"
	txtChallengePassword = "+ UGFzc3dvcmQ6\r\n"

	// Results of a login: src/login-common/login-common.h (AUTH_FAILED_MSG,
	// AUTH_TEMP_FAILED_MSG), login-proxy.h (LOGIN_PROXY_FAILURE_MSG) and
	// client-common-auth.c; the prefix per result from pop3_client_auth_result and
	// pop3_proxy_send_failure_reply. Dovecot appends " [<host>:<time>]" to the tempfail
	// text; the codec has no clock, so an engine that wants it passes the whole text in
	// AuthResult.Text.
	txtLoggedIn       = "+OK Logged in.\r\n" // Doorman's: Dovecot forwards the backend's +OK
	txtAuthFailed     = "-ERR [AUTH] Authentication failed.\r\n"
	msgAuthFailed     = "Authentication failed."
	msgTempFailed     = "Temporary authentication failure."
	msgAccountUnavail = "Account is temporarily unavailable."
	msgLoginDisabled  = "Login disabled for this user"
	msgAuthzFailed    = "Authorization failed"

	// Doorman's own: Dovecot has no limit on failed logins per connection (it slows
	// them down with auth_failure_delay and the auth penalty instead).
	txtTooManyAuth = "-ERR Too many invalid authentication attempts.\r\n"
)
