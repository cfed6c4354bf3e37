package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis modes: chosen explicitly, because go-redis builds a Cluster client
// from any two addresses if left to guess.
const (
	ModeSingle   = "single"
	ModeSentinel = "sentinel"
	ModeCluster  = "cluster"
)

// RedisConfig configures the Redis store.
type RedisConfig struct {
	Mode       string   `yaml:"mode"`        // single, sentinel or cluster
	Addrs      []string `yaml:"addrs"`       // the server; the Sentinels; the Cluster seed nodes
	MasterName string   `yaml:"master_name"` // Sentinel
	Username   string   `yaml:"username"`
	Password   string   `yaml:"password"`
	// SentinelPassword authenticates to the Sentinels, if they need it.
	SentinelPassword string `yaml:"sentinel_password"`
	DB               int    `yaml:"db"`
	// Timeout bounds one command (dial, read, write); default 300ms.
	// Redis down must cost a mail path a fraction of a second, not the
	// library's default of seconds.
	Timeout time.Duration `yaml:"timeout"`
	// Prefix starts every key, so several systems can share a server.
	Prefix string `yaml:"prefix"`
	// TLS encrypts the connections to Redis and the Sentinels.
	TLS RedisTLS `yaml:"tls"`
}

// RedisTLS configures TLS to Redis (Redis 6+ with tls-port).
type RedisTLS struct {
	Enabled bool `yaml:"enabled"`
	// CAFile holds the CA certificates that sign the servers'
	// certificates; "" uses the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is checked in the servers' certificates; "" uses the
	// host of each address.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are a client certificate, for servers with
	// tls-auth-clients yes.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// config is the tls.Config of t, nil when TLS is off.
func (t RedisTLS) config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store: redis tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store: redis tls ca_file %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store: redis tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Redis is the shared store of a cluster.
type Redis struct {
	c      redis.UniversalClient
	prefix string
	mode   string
}

var redisLoggerOnce sync.Once

// OpenRedis connects to Redis (lazily: a server that is down now is
// tried again at every command).
func OpenRedis(cfg RedisConfig) (*Redis, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("store: redis: no address")
	}
	t := cfg.Timeout
	if t <= 0 {
		t = 300 * time.Millisecond
	}
	redisLoggerOnce.Do(func() { redis.SetLogger(quietLogger{}) })
	tc, err := cfg.TLS.config()
	if err != nil {
		return nil, err
	}
	maint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	var c redis.UniversalClient
	switch cfg.Mode {
	case ModeSingle, "":
		if len(cfg.Addrs) != 1 {
			return nil, fmt.Errorf("store: redis mode single takes one address, got %d (use mode sentinel or cluster)", len(cfg.Addrs))
		}
		c = redis.NewClient(&redis.Options{Addr: cfg.Addrs[0], Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t, ContextTimeoutEnabled: true,
			MaxRetries: 1, DialerRetries: 1, PoolTimeout: t, DisableIdentity: true, MaintNotificationsConfig: maint, TLSConfig: tc})
	case ModeSentinel:
		if cfg.MasterName == "" {
			return nil, fmt.Errorf("store: redis mode sentinel needs master_name")
		}
		c = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: cfg.MasterName, SentinelAddrs: cfg.Addrs,
			SentinelPassword: cfg.SentinelPassword, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t, ContextTimeoutEnabled: true,
			MaxRetries: 2, DialerRetries: 1, PoolTimeout: t, DisableIdentity: true, TLSConfig: tc})
	case ModeCluster:
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cfg.Addrs, Username: cfg.Username, Password: cfg.Password,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t, ContextTimeoutEnabled: true,
			MaxRetries: 2, DialerRetries: 1, PoolTimeout: t, DisableIdentity: true, MaintNotificationsConfig: maint, TLSConfig: tc})
	default:
		return nil, fmt.Errorf("store: redis mode %q: want single, sentinel or cluster", cfg.Mode)
	}
	return &Redis{c: c, prefix: cfg.Prefix, mode: cfg.Mode}, nil
}

// quietLogger drops go-redis's internal log lines: every failure reaches
// us as an error, which callers log with context.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// k makes the Redis key of a logical key. The logical key is the hash
// tag, so everything derived from it (window buckets, lock tokens) lives
// in one Cluster slot and one Lua script may touch it all.
func (r *Redis) k(key string) string {
	if strings.ContainsAny(key, "{}") {
		key = braces.Replace(key)
	}
	return r.prefix + "{" + key + "}"
}

var braces = strings.NewReplacer("{", "(", "}", ")")

// wrap classifies errors: anything but "no such key" means the store did
// not answer.
func wrap(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	return fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := r.c.Get(ctx, r.k(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrap(err)
	}
	return v, true, nil
}

// Do implements Store: one pipeline (in a Cluster, go-redis sends each
// node its share). A Greylist attempt goes as EVALSHA; if Redis does not
// know the script (restarted, failed over), that attempt alone is made
// again with Script.Run, which loads it. An attempt with Unless is one
// script over both keys; in a Cluster, where they are in different
// slots, the pipeline reads the Unless key and the attempt follows in a
// second round trip.
func (r *Redis) Do(ctx context.Context, ops []Op) error {
	cluster := r.mode == ModeCluster
	var later []int // Cluster: attempts decided after the pipeline
	cmds, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, op := range ops {
			switch {
			case op.Greylist == nil:
				p.Get(ctx, r.k(op.Key))
			case op.Unless != "" && cluster:
				p.Get(ctx, r.k(op.Unless))
				later = append(later, i)
			default:
				script, keys, args := r.greylistCall(op)
				script.EvalSha(ctx, p, keys, args...)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return wrap(err)
	}
	for i, c := range cmds {
		op := &ops[i]
		if op.Greylist != nil && (op.Unless == "" || !cluster) {
			res, err := c.(*redis.Cmd).Int64Slice()
			if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
				script, keys, args := r.greylistCall(*op)
				res, err = script.Run(ctx, r.c, keys, args...).Int64Slice()
			}
			if err != nil {
				return wrap(err)
			}
			if len(res) > 0 && res[0] == -1 {
				op.Skipped = true
			} else {
				op.Entry = greylistEntry(res, op.Now)
			}
			continue
		}
		v, err := c.(*redis.StringCmd).Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return wrap(err)
		}
		if op.Greylist != nil { // Cluster: the Unless key's value
			op.Skipped = parseCount(v) >= op.UnlessAtLeast
			continue
		}
		op.Value = v
	}
	for _, i := range later {
		if op := &ops[i]; !op.Skipped {
			var err error
			if op.Entry, err = r.Greylist(ctx, op.Key, op.Now, *op.Greylist); err != nil {
				return err
			}
		}
	}
	return nil
}

// greylistCall is the script, keys and arguments of a Greylist op.
func (r *Redis) greylistCall(op Op) (*redis.Script, []string, []any) {
	if op.Unless == "" {
		return greylistScript, []string{r.k(op.Key)}, greylistArgs(op.Now, *op.Greylist)
	}
	return greylistUnlessScript, []string{r.k(op.Key), r.k(op.Unless)}, append(greylistArgs(op.Now, *op.Greylist), op.UnlessAtLeast)
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ix := indexOf(key)
	if ix == "" {
		return wrap(r.c.Set(ctx, r.k(key), value, max(ttl, 0)).Err())
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.k(key), value, max(ttl, 0))
		idx := r.k("idx:" + ix)
		p.ZAdd(ctx, idx, redis.Z{Member: key})
		// Longer than any of its keys lives (plain EXPIRE: Redis 6
		// has no NX or GT).
		p.Expire(ctx, idx, indexKeep)
		return nil
	})
	return wrap(err)
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, key string) error {
	ix := indexOf(key)
	if ix == "" {
		return wrap(r.c.Del(ctx, r.k(key)).Err())
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.k(key))
		p.ZRem(ctx, r.k("idx:"+ix), key)
		return nil
	})
	return wrap(err)
}

// indexed are the key prefixes whose keys Scan lists from an index (a
// sorted set per "PREFIX:PART:", its members the keys) instead of
// walking the whole key space with SCAN, greylisting included: the
// received reports, their day tallies and the marks of the reports
// sent, which the web view lists per domain on every page.
var indexed = []string{"rinm:", "rind:", "tlsm:", "rsent:"}

// indexKeep is how long an index outlives its last Set: longer than the
// received reports are kept (400 days).
const indexKeep = 410 * 24 * time.Hour

// indexOf is the index key belongs to ("" for none): its prefix and
// the part after it, "rinm:DOMAIN:".
func indexOf(key string) string {
	for _, p := range indexed {
		if strings.HasPrefix(key, p) {
			if i := strings.IndexByte(key[len(p):], ':'); i >= 0 {
				return key[:len(p)+i+1]
			}
		}
	}
	return ""
}

// indexComplete is the member that says an index holds every key of its
// prefix (it sorts first). An index without it was started by a Set
// before anything listed the prefix: keys stored before it are missing.
const indexComplete = "\x00complete"

// scanIndex lists the keys of index ix: what the index holds, less the
// keys that expired (dropped from it), or, for an index not known
// complete, what SCAN finds, which then completes it.
func (r *Redis) scanIndex(ctx context.Context, ix string, limit int) ([]string, error) {
	idx := r.k("idx:" + ix)
	members, err := r.c.ZRange(ctx, idx, 0, -1).Result()
	if err != nil {
		return nil, wrap(err)
	}
	if len(members) == 0 || members[0] != indexComplete {
		keys, err := r.scanKeys(ctx, ix, 0)
		if err != nil {
			return nil, err
		}
		_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < len(keys); i += 1000 {
				zs := make([]redis.Z, 0, 1000)
				for _, k := range keys[i:min(i+1000, len(keys))] {
					zs = append(zs, redis.Z{Member: k})
				}
				p.ZAdd(ctx, idx, zs...)
			}
			p.ZAdd(ctx, idx, redis.Z{Member: indexComplete})
			return nil
		})
		if err != nil {
			return nil, wrap(err)
		}
		if limit > 0 && len(keys) > limit {
			keys = keys[:limit]
		}
		return keys, nil
	}
	members = members[1:]
	exists := make([]*redis.IntCmd, len(members))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			exists[i] = p.Exists(ctx, r.k(m))
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	var out, gone []string
	for i, m := range members {
		if exists[i].Val() == 0 {
			gone = append(gone, m)
		} else if limit <= 0 || len(out) < limit {
			out = append(out, m)
		}
	}
	if len(gone) > 0 {
		anys := make([]any, len(gone))
		for i, g := range gone {
			anys[i] = g
		}
		if err := r.c.ZRem(ctx, idx, anys...).Err(); err != nil {
			return nil, wrap(err)
		}
	}
	return out, nil
}

var incrScript = redis.NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n`)

// Incr implements Store.
func (r *Redis) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	n, err := incrScript.Run(ctx, r.c, []string{r.k(key)}, delta, ttl.Milliseconds()).Int64()
	return n, wrap(err)
}

// countersScript applies addCounters and formatCounters atomically.
// Lua numbers are doubles: exact for counts below 2^53.
var countersScript = redis.NewScript(`
local cur = {}
local v = redis.call('GET', KEYS[1])
if v then
  for f in string.gmatch(v, '%S+') do cur[#cur + 1] = tonumber(f) or 0 end
end
local changed = false
for i = 1, #ARGV - 1 do
  local d = tonumber(ARGV[i])
  cur[i] = (cur[i] or 0) + d
  if d ~= 0 then changed = true end
end
if changed then
  local parts = {}
  for i = 1, #cur do parts[i] = string.format('%d', cur[i]) end
  local ttl = tonumber(ARGV[#ARGV])
  if ttl > 0 then
    redis.call('SET', KEYS[1], table.concat(parts, ' '), 'PX', ttl)
  else
    redis.call('SET', KEYS[1], table.concat(parts, ' '))
  end
end
return cur`)

// Counters implements Store.
func (r *Redis) Counters(ctx context.Context, key string, add []int64, ttl time.Duration) ([]int64, error) {
	args := make([]any, 0, len(add)+1)
	for _, d := range add {
		args = append(args, d)
	}
	args = append(args, max(ttl, 0).Milliseconds())
	res, err := countersScript.Run(ctx, r.c, []string{r.k(key)}, args...).Int64Slice()
	if err != nil {
		return nil, wrap(err)
	}
	return res, nil
}

var windowScript = redis.NewScript(`
local c = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
return {c, p}`)

// Window implements Store.
func (r *Redis) Window(ctx context.Context, key string, now time.Time, win time.Duration, n int64) (int64, error) {
	idx, frac := bucket(now, win)
	base := r.k(key)
	res, err := windowScript.Run(ctx, r.c, []string{base + ":b" + strconv.FormatInt(idx, 10), base + ":b" + strconv.FormatInt(idx-1, 10)},
		n, (2 * win).Milliseconds()).Int64Slice()
	if err != nil {
		return 0, wrap(err)
	}
	return windowCount(res[1], res[0], frac), nil
}

// greylistScript applies decideGreylist atomically; times in ms.
var greylistScript = redis.NewScript(greylistLua)

// greylistUnlessScript is greylistScript unless the number at KEYS[2]
// is at least ARGV[5] (Op.Unless); then it returns {-1, 0, 0}. Outside a
// Cluster only: its two keys are in different slots.
var greylistUnlessScript = redis.NewScript(`
if (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) >= tonumber(ARGV[5]) then return {-1, 0, 0} end
` + greylistLua)

// greylistLua is decideGreylist in Lua.
var greylistLua = `
local now, delay, window, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'first', 'passed', 'count')
local first, passed, count = tonumber(v[1]), v[2] == '1', tonumber(v[3] or '0')
if first == nil or (not passed and (now - first > window or first - now > ` + strconv.FormatInt(clockSkew.Milliseconds(), 10) + `)) then
  first, passed, count = now, false, 0
else
  if not passed and now - first >= delay then passed = true end
  if passed then count = count + 1 end
end
redis.call('HSET', KEYS[1], 'first', first, 'last', now, 'passed', passed and '1' or '0', 'count', count)
if passed then redis.call('PEXPIRE', KEYS[1], keep) else redis.call('PEXPIRE', KEYS[1], window) end
return {first, passed and 1 or 0, count}`

// Greylist implements Store.
func (r *Redis) Greylist(ctx context.Context, key string, now time.Time, p GreylistPolicy) (GreylistEntry, error) {
	res, err := greylistScript.Run(ctx, r.c, []string{r.k(key)}, greylistArgs(now, p)...).Int64Slice()
	if err != nil {
		return GreylistEntry{}, wrap(err)
	}
	return greylistEntry(res, now), nil
}

func greylistArgs(now time.Time, p GreylistPolicy) []any {
	return []any{now.UnixMilli(), p.Delay.Milliseconds(), p.Window.Milliseconds(), p.Keep.Milliseconds()}
}

func greylistEntry(res []int64, now time.Time) GreylistEntry {
	if len(res) < 3 {
		return GreylistEntry{First: now, Last: now}
	}
	return GreylistEntry{First: time.UnixMilli(res[0]), Last: now, Passed: res[1] == 1, Count: res[2]}
}

// lockScript: KEYS[1] the lock (owner, until), KEYS[2] its token, which
// outlives every lease so tokens only grow.
var lockScript = redis.NewScript(`
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'owner', 'until')
local owner, untl = v[1], tonumber(v[2] or '0')
if owner and owner ~= '' and owner ~= ARGV[1] and untl > now then
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local token
if owner ~= ARGV[1] then token = redis.call('INCR', KEYS[2]) else token = tonumber(redis.call('GET', KEYS[2]) or '0') end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', now + lease)
redis.call('PEXPIRE', KEYS[1], lease * 2)
return {1, token}`)

var unlockScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`)

// Lock implements Store.
func (r *Redis) Lock(ctx context.Context, name, owner string, now time.Time, lease time.Duration) (int64, bool, error) {
	base := r.k("lock:" + name)
	res, err := lockScript.Run(ctx, r.c, []string{base, base + ":token"}, owner, now.UnixMilli(), lease.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, false, wrap(err)
	}
	return res[1], res[0] == 1, nil
}

// Unlock implements Store.
func (r *Redis) Unlock(ctx context.Context, name, owner string) error {
	return wrap(unlockScript.Run(ctx, r.c, []string{r.k("lock:" + name)}, owner).Err())
}

// Scan implements Store: from an index for the prefixes that have one
// (indexed), else with SCAN, on a Cluster on every master.
func (r *Redis) Scan(ctx context.Context, prefix string, limit int) ([]string, error) {
	if indexOf(prefix) == prefix {
		return r.scanIndex(ctx, prefix, limit)
	}
	return r.scanKeys(ctx, prefix, limit)
}

// scanKeys lists the keys that start with prefix with SCAN.
func (r *Redis) scanKeys(ctx context.Context, prefix string, limit int) ([]string, error) {
	pattern := r.prefix + "{" + escapeGlob(prefix) + "*"
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			k := it.Val()
			if !strings.HasSuffix(k, "}") {
				continue // window buckets, lock tokens
			}
			mu.Lock()
			if limit <= 0 || len(out) < limit {
				out = append(out, strings.TrimSuffix(strings.TrimPrefix(k, r.prefix+"{"), "}"))
			}
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.c)
	}
	return out, wrap(err)
}

func escapeGlob(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "{", "(", "}", ")").Replace(s)
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error { return wrap(r.c.Ping(ctx).Err()) }

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }

// Mode is the configured mode.
func (r *Redis) Mode() string { return r.mode }
