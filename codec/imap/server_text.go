package imap

// Every text the client side puts on the wire, in one place. They are Dovecot 2.3.21's,
// word for word, with the file each comes from; the few Doorman makes up say so.

const (
	// src/imap-login/imap-login-client.c
	txtCapabilityOK   = "OK Pre-login capabilities listed, post-login capabilities have more."
	txtNoopOK         = "OK NOOP completed."
	txtByeLogout      = "Logging out"
	txtLogoutOK       = "OK Logout completed."
	txtEnabled        = "* ENABLED\r\n"
	txtEnableOK       = "OK ENABLE ignored in non-authenticated state."
	txtBadCommand     = "BAD Error in IMAP command received by server."
	txtByeTooManyBad  = "Too many invalid IMAP commands."
	txtBadLoginAsTag  = "BAD First parameter in line is IMAP's command tag, not the command name. Add that before the command, like: a login user pass"
	txtCapabilityHead = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE" // CAPABILITY_BANNER_STRING
	txtLiteralPlus    = " LITERAL+"
	txtStartTLSCap    = " STARTTLS"
	txtLoginDisabled  = " LOGINDISABLED"
	txtAuthMechs      = " AUTH=PLAIN AUTH=LOGIN"

	// src/imap-login/imap-login-cmd-id.c
	txtIDOK        = "OK ID completed."
	txtBadIDParams = "BAD Invalid ID parameters"

	// src/lib-imap/imap-parser.c: a synchronizing literal's go-ahead.
	txtLiteralContinue = "+ OK\r\n"

	// src/login-common/client-common.c: client_cmd_starttls
	txtStartTLSOK     = "OK Begin TLS negotiation now."
	txtBadTLSActive   = "BAD TLS is already active."
	txtBadTLSDisabled = "BAD TLS support isn't enabled."

	// src/login-common/client-common.c: client_read, client_idle_disconnect_timeout
	txtByeInputFull      = "Input buffer full, aborting"
	txtByeInactivity     = "Disconnected for inactivity."
	txtByeInactivityAuth = "Disconnected for inactivity during authentication."

	// src/login-common/client-common-auth.c: client_check_plaintext_auth
	txtAlertPlaintext = "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed.\r\n"
	txtNoPlaintext    = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."

	// src/login-common/sasl-server.c: sasl_server_auth_begin, mapped by
	// src/imap-login/client-authenticate.c: imap_client_auth_result
	txtNoUnsupportedMech = "NO [ALERT] Unsupported authentication mechanism."
	txtNoPlaintextMech   = "NO [PRIVACYREQUIRED] Plaintext authentication disabled."

	// src/login-common/client-common-auth.c: sasl_callback
	txtBadAuthAborted = "BAD Authentication aborted by client."

	// src/auth/auth-request-handler.c: the auth process refuses bad base64, and
	// imap-login answers BAD with its reason (CLIENT_AUTH_RESULT_INVALID_BASE64).
	txtBadBase64Initial   = "BAD Invalid base64 data in initial response"
	txtBadBase64Continued = "BAD Invalid base64 data in continued response"

	// SASL challenges, base64 as they go out: "" and, for LOGIN, "Username:" and
	// "Password:" (src/auth/mech-login.c).
	txtChallengeEmpty    = "+ \r\n"
	txtChallengeUsername = "+ VXNlcm5hbWU6\r\n"
	txtChallengePassword = "+ UGFzc3dvcmQ6\r\n"

	// Results of a login. src/login-common/login-common.h (AUTH_FAILED_MSG,
	// AUTH_TEMP_FAILED_MSG), client-common-auth.c (client_auth_handle_reply) and
	// imap-proxy.c (imap_proxy_send_failure_reply); resp-codes from imap-resp-code.h.
	// Dovecot appends " [<host>:<time>]" to the tempfail text; the codec has no clock,
	// so an engine that wants it passes the whole text in AuthResult.Text.
	txtLoggedIn        = "OK Logged in." // Doorman's: Dovecot forwards the backend's OK
	txtNoAuthFailed    = "NO [AUTHENTICATIONFAILED] Authentication failed."
	txtAuthFailed      = "Authentication failed."
	txtTempFailed      = "Temporary authentication failure."
	txtAccountUnavail  = "Account is temporarily unavailable."
	txtLoginDisabledMs = "Login disabled for this user"
	txtAuthzFailed     = "Authorization failed"
	codeAuthFailed     = "AUTHENTICATIONFAILED"
	codeAlert          = "ALERT"
	codeUnavailable    = "UNAVAILABLE"
	codeServerBug      = "SERVERBUG"
	codeContactAdmin   = "CONTACTADMIN"
	codeAuthzFailed    = "AUTHORIZATIONFAILED"

	// Doorman's own: Dovecot has no limit on failed logins per connection (it slows
	// them down with auth_failure_delay and the auth penalty instead).
	txtByeTooManyAuth = "Too many invalid authentication attempts."
)
