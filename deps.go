//go:build tools

package tools

import (
	_ "github.com/panjf2000/gnet/v2"
	_ "github.com/pires/go-proxyproto"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/valyala/bytebufferpool"
	_ "go.uber.org/zap"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/sys/unix"
	_ "gopkg.in/yaml.v3"
)
