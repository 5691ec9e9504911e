package route

import (
	"context"
	"fmt"
	"testing"
	"time"

	"doorman/route/routetest"
)

func sessionRec(host, id, user string, started time.Time) SessionRecord {
	return SessionRecord{Host: host, ID: id, User: user, Protocol: "imap", Listener: "imap",
		Client: "192.0.2.1:40000", Backend: "10.0.0.1:143", Vsite: "v1", Started: started.UTC(),
		ToClient: 10, ToBackend: 20}
}

func testFleetSessions(t *testing.T, f *Fleet) {
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	// Host b: written whole; host a: written whole, then changed.
	if err := f.ReplaceSessions(ctx, "b", []SessionRecord{sessionRec("b", "s3", "carol", t0)}, time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	many := make([]SessionRecord, 0, 2500) // more than one HSET chunk
	for i := range 2500 {
		many = append(many, sessionRec("a", fmt.Sprintf("x%d", i), "bulk", t0.Add(time.Duration(i)*time.Second)))
	}
	if err := f.ReplaceSessions(ctx, "a", many, time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	list, err := f.ListSessions(ctx, 0)
	if err != nil || len(list) != 2501 {
		t.Fatalf("ListSessions: %d records, %v; want 2501", len(list), err)
	}
	// Replacing drops what the new set does not hold.
	if err := f.ReplaceSessions(ctx, "a", []SessionRecord{sessionRec("a", "s2", "bob", t0.Add(time.Second))}, time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteSessions(ctx, "a", []SessionRecord{sessionRec("a", "s1", "alice", t0)}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteSessions(ctx, "a", []SessionRecord{sessionRec("a", "s4", "dave", t0)}, []string{"s2"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	list, err = f.ListSessions(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.Host+"/"+r.ID+"/"+r.User)
	}
	want := fmt.Sprint([]string{"a/s1/alice", "a/s4/dave", "b/s3/carol"})
	if fmt.Sprint(got) != want {
		t.Fatalf("sessions %v, want %v", got, want)
	}
	if r := list[0]; r.Backend != "10.0.0.1:143" || r.Vsite != "v1" || !r.Started.Equal(t0) || r.ToClient != 10 || r.ToBackend != 20 {
		t.Fatalf("record read back as %+v", r)
	}
	// A host whose hash is gone (expired) drops out, and out of the zset.
	if err := f.c.Del(ctx, f.SessionsKey("b")).Err(); err != nil {
		t.Fatal(err)
	}
	if list, _ = f.ListSessions(ctx, time.Hour); len(list) != 2 {
		t.Fatalf("after b's hash expired: %d records, want 2", len(list))
	}
	if n, _ := f.c.ZScore(ctx, f.HostsKey(), "b").Result(); n == 0 {
		t.Fatalf("b dropped from the zset before staleAfter")
	}
	if _, err := f.ListSessions(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.c.ZScore(ctx, f.HostsKey(), "b").Err(); err == nil {
		t.Fatalf("b still in %s", f.HostsKey())
	}
	// The expiry is set.
	if ttl := f.c.TTL(ctx, f.SessionsKey("a")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL of %s = %v", f.SessionsKey("a"), ttl)
	}
	// A clean stop removes the host.
	if err := f.DeleteSessions(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if list, _ = f.ListSessions(ctx, 0); len(list) != 0 {
		t.Fatalf("after DeleteSessions: %v", list)
	}
	if n := f.c.Exists(ctx, f.SessionsKey("a"), f.HostsKey()).Val(); n != 0 {
		t.Fatalf("%d keys left after DeleteSessions", n)
	}

	// Kick records: written by Kick, read one by one and all at once.
	at := time.UnixMilli(time.Now().UnixMilli())
	for _, k := range [][2]string{{KickUser, "alice"}, {KickBackend, "10.0.0.1"}, {KickVsite, "v1"}} {
		if _, err := f.Kick(ctx, k[0], k[1], at, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	got2, ok, err := f.KickRecord(ctx, KickUser, "alice")
	if err != nil || !ok || !got2.Equal(at) {
		t.Fatalf("KickRecord(user alice) = %v %v %v, want %v", got2, ok, err, at)
	}
	if _, ok, err := f.KickRecord(ctx, KickUser, "nobody"); ok || err != nil {
		t.Fatalf("KickRecord(user nobody) = %v %v", ok, err)
	}
	recs, err := f.KickRecords(ctx)
	if err != nil || len(recs) != 3 {
		t.Fatalf("KickRecords = %v, %v; want 3", recs, err)
	}
	for _, r := range recs {
		if !r.At.Equal(at) {
			t.Fatalf("record %+v: time %v, want %v", r, r.At, at)
		}
	}
}

func TestFleetSessions(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}, KeyPrefix: "p:"})
	testFleetSessions(t, r.Fleet())
}

func TestFleetSessionsCluster(t *testing.T) {
	c := routetest.StartCluster(t, 3)
	r := newTestRedis(t, RedisConfig{Addrs: c.Addrs})
	testFleetSessions(t, r.Fleet())
}
