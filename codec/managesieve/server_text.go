package managesieve

// Every text the client side puts on the wire, in one place. They are Pigeonhole
// 0.5.21's and Dovecot 2.3.21's, word for word, with the file each comes from; the few
// Doorman makes up say so. Replies are complete lines: ManageSieve has no tags.

const (
	// src/managesieve-login/client.c: client_send_capabilities, cmd_*
	capImplementation = `"IMPLEMENTATION" `
	capSieve          = `"SIEVE" `
	capNotify         = `"NOTIFY" `
	capSASL           = `"SASL" `
	capSASLMechs      = `"SASL" "PLAIN LOGIN"` + "\r\n"
	capSASLNone       = `"SASL" ""` + "\r\n"
	capStartTLS       = `"STARTTLS"` + "\r\n"
	capVersion        = `"VERSION" "1.0"` + "\r\n"
	capXclient        = `"XCLIENT"` + "\r\n" // trusted clients only

	txtCapabilityOK = `OK "Capability completed."` + "\r\n"
	txtNoopOK       = `OK "NOOP Completed"` + "\r\n"
	txtNoopTagHead  = `OK (TAG `
	txtNoopTagTail  = `) "Done"` + "\r\n"
	txtNoopBadTag   = `NO "Invalid echo tag."` + "\r\n"
	txtLogoutOK     = `OK "Logout completed."` + "\r\n"
	txtXclientNo    = `NO "You are not from trusted IP"` + "\r\n"
	txtXclientOK    = `OK "Updated"` + "\r\n"
	txtBadCommand   = `NO "Error in MANAGESIEVE command received by server."` + "\r\n"
	txtByeTooMany   = `BYE "Too many invalid MANAGESIEVE commands."` + "\r\n"
	txtTLSOK        = `OK "TLS negotiation successful."` + "\r\n" // managesieve_client_starttls

	// src/login-common/client-common.c: client_cmd_starttls, through
	// managesieve_client_notify_starttls
	txtStartTLSOK     = `OK "Begin TLS negotiation now."` + "\r\n"
	txtTLSActive      = `NO "TLS is already active."` + "\r\n"
	txtTLSNotEnabled  = `NO "TLS support isn't enabled."` + "\r\n"
	txtByeInputFull   = `BYE "Input buffer full, aborting"` + "\r\n"
	txtByeInactivity  = `BYE "Disconnected for inactivity."` + "\r\n"
	txtByeInactAuth   = `BYE "Disconnected for inactivity during authentication."` + "\r\n"
	txtNoPrefix       = `NO `
	txtByePrefix      = `BYE `
	txtNoTryLaterHead = `NO (TRYLATER) `

	// src/login-common/sasl-server.c: sasl_server_auth_begin, answered by
	// managesieve_client_auth_result with client_send_no
	txtNoUnsupportedMech = `NO "Unsupported authentication mechanism."` + "\r\n"
	txtNoPlaintext       = `NO "Plaintext authentication disabled."` + "\r\n"

	// src/managesieve-login/client-authenticate.c: managesieve_client_auth_read_response
	txtInvalidInitial  = "Invalid AUTHENTICATE initial response."
	txtInvalidResponse = "Invalid AUTHENTICATE client response."
	txtEmptyResponse   = "Received empty AUTHENTICATE client response line."

	// src/login-common/client-common-auth.c: sasl_callback
	txtNoAborted = `NO "Authentication aborted by client."` + "\r\n"

	// src/auth/auth-request-handler.c: the auth process refuses bad base64; the login
	// process forwards its reason (CLIENT_AUTH_RESULT_INVALID_BASE64).
	txtNoBase64Initial   = `NO "Invalid base64 data in initial response"` + "\r\n"
	txtNoBase64Continued = `NO "Invalid base64 data in continued response"` + "\r\n"

	// SASL challenges, as managesieve_client_auth_send_challenge quotes them: "" and,
	// for LOGIN, "Username:" and "Password:" in base64 (src/auth/mech-login.c).
	txtChallengeEmpty    = `""` + "\r\n"
	txtChallengeUsername = `"VXNlcm5hbWU6"` + "\r\n"
	txtChallengePassword = `"UGFzc3dvcmQ6"` + "\r\n"

	// Results of a login: login-common.h (AUTH_FAILED_MSG, AUTH_TEMP_FAILED_MSG),
	// client-common-auth.c (client_auth_handle_reply), login-proxy.h
	// (LOGIN_PROXY_FAILURE_MSG), managesieve-proxy.c
	// (managesieve_proxy_send_failure_reply). Dovecot appends " [<host>:<time>]" to the
	// tempfail text; the codec has no clock, so an engine that wants it passes the whole
	// text in AuthResult.Text.
	txtLoggedIn        = `OK "Logged in."` + "\r\n" // Doorman's: Dovecot forwards the backend's OK
	txtNoAuthFailed    = `NO "Authentication failed."` + "\r\n"
	txtAuthFailed      = "Authentication failed."
	txtTempFailed      = "Temporary authentication failure."
	txtAccountUnavail  = "Account is temporarily unavailable."
	txtLoginDisabledMs = "Login disabled for this user"
	txtAuthzFailed     = "Authorization failed"
)
