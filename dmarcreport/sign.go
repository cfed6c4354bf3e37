package dmarcreport

import (
	"bytes"
	"context"

	"github.com/wehr/wehr/dkimkeys"
)

// KeySigner signs report messages with the active keys of the
// reporting address's domain (or a parent's) in the set keys returns:
// RFC 9990 wants reports to pass DMARC, aligned. No key: unsigned.
func KeySigner(keys func() *dkimkeys.Set) Signer {
	return func(ctx context.Context, msg []byte, fromDomain string) ([]string, error) {
		set := keys()
		if set == nil {
			return nil, nil
		}
		d, ks, err := set.Signing(fromDomain)
		if err != nil || len(ks) == 0 {
			return nil, err
		}
		return dkimkeys.Sign(ctx, bytes.NewReader(msg), d, ks, 0)
	}
}
