package engine

import (
	"context"
	"errors"
)

// lmtpServer serves one LMTP listener. (Being written.)
type lmtpServer struct{}

func newLMTPServer(srv *Server, l *listener) (*lmtpServer, error) {
	return nil, errors.New("lmtp: not implemented yet")
}

func (ls *lmtpServer) close(ctx context.Context) error { return nil }
