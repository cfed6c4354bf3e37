package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"time"
)

// HTTP is how ServeHTTP serves: over TLS with CertFile and KeyFile (PEM)
// or TLS (certificates chosen per name), else plain HTTP.
type HTTP struct {
	CertFile, KeyFile string
	TLS               *tls.Config
	// WriteTimeout bounds writing an answer (0: 30 s; a profile of N
	// seconds needs more than N).
	WriteTimeout time.Duration
	// ErrorLog gets the server's own complaints (nil: the standard
	// logger); scanners' failed handshakes are noise to most.
	ErrorLog *log.Logger
}

// ServeHTTP serves h on ln until ctx ends, then stops taking requests
// and gives those under way 5 seconds. Every wehr web endpoint gets the
// same deadlines: a request's header within 5 s and the whole request
// within 10, at most 16 KB of header, idle connections closed after 2
// minutes.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler, o HTTP) error {
	wt := o.WriteTimeout
	if wt == 0 {
		wt = 30 * time.Second
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: wt, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10, TLSConfig: o.TLS, ErrorLog: o.ErrorLog}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx) //nolint:errcheck
	})
	defer stop()
	var err error
	if o.CertFile != "" || o.TLS != nil {
		err = hs.ServeTLS(ln, o.CertFile, o.KeyFile)
	} else {
		err = hs.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
