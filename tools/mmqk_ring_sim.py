#!/usr/bin/env python3
"""mmqk_ring_sim.py -- the barrier protocol of k_mmqk2 (shaders/cuda/mmq_k.cu, v4) under random schedules.

Agents as the kernel has them: the weight warp (tensor copies into ws slots, refilled after the
consumers' wempty), the activation warp (as slots refilled after aempty; each weight slot's row
table decoded after its wfull, then wready), NC consumer warps (afull, wfull, wready; then wempty,
aempty). mbarriers with phases, parities and transaction bytes; copies land at random later times.
Checks: no deadlock, no stale or overwritten slot read, no barrier lapped by a waiter. Then two
mutations (a key wait removed) that it must catch. No GPU needed: `python3 tools/mmqk_ring_sim.py [N]`.
"""
import random, sys

class Bar:
    def __init__(s, name, count): s.name, s.count, s.arr, s.tx, s.n = name, count, 0, 0, 0
    def maybe(s):
        if s.arr == s.count and s.tx == 0:
            s.n += 1; s.arr = 0
    def arrive(s): s.arr += 1; assert s.arr <= s.count, s.name; s.maybe()
    def arrive_tx(s, b): s.tx += b; s.arr += 1; assert s.arr <= s.count; s.maybe()
    def complete(s, b): s.tx -= b; assert s.tx >= 0; s.maybe()
    def ok(s, par, need):   # waiting for completion number `need` (0-based) with parity par
        assert par == need & 1
        if s.n >= need + 2: raise AssertionError("lapped %s n=%d need=%d" % (s.name, s.n, need))
        return (s.n & 1) != par

def run(seed, total, ws, as_, NC, mutate=None):
    R = random.Random(seed)
    wfull = [Bar('wfull%d' % i, 1) for i in range(ws)]; wready = [Bar('wready%d' % i, 1) for i in range(ws)]
    wempty = [Bar('wempty%d' % i, NC) for i in range(ws)]
    afull = [Bar('afull%d' % i, 1) for i in range(as_)]; aempty = [Bar('aempty%d' % i, NC) for i in range(as_)]
    wslot = [None] * ws; rtab = [None] * ws; aslot = [None] * as_
    reading = {}   # ('w', s) -> count of consumers reading
    inflight = []  # (kind, slot, stage, bar, bytes)
    def wait(bar, need): 
        while not bar.ok(need & 1, need): yield None
    def W():
        for gi in range(total):
            s = gi % ws
            if gi >= ws:
                yield from wait(wempty[s], (gi - ws) // ws)
            wfull[s].arrive_tx(100)
            assert reading.get(('w', s), 0) == 0, "weight slot refilled while read"
            wslot[s] = 'garbage'; rtab[s] = 'stale'
            inflight.append(('w', s, gi, wfull[s], 100)); yield None
    def A():
        ia = 0
        def acts(st):
            s = st % as_
            afull[s].arrive_tx(50)
            assert reading.get(('a', s), 0) == 0, "act slot refilled while read"
            aslot[s] = 'garbage'
            inflight.append(('a', s, st, afull[s], 50))
        while ia < min(as_, total):
            acts(ia); ia += 1; yield None
        for gi in range(total):
            s = gi % ws
            if mutate != 'no_wfull_wait':
                yield from wait(wfull[s], gi // ws)
            assert wslot[s] == gi, "decode before weights landed: %r vs %d" % (wslot[s], gi)
            rtab[s] = gi
            wready[s].arrive(); yield None
            if gi >= 1 and ia < total:
                j = gi - 1
                if mutate != 'no_aempty_wait':
                    yield from wait(aempty[j % as_], j // as_)
                assert ia == j + as_
                acts(ia); ia += 1; yield None
    def C(c):
        for i in range(total):
            s, a = i % ws, i % as_
            yield from wait(afull[a], i // as_)
            yield from wait(wfull[s], i // ws)
            yield from wait(wready[s], i // ws)
            reading[('w', s)] = reading.get(('w', s), 0) + 1; reading[('a', a)] = reading.get(('a', a), 0) + 1
            assert wslot[s] == i and rtab[s] == i and aslot[a] == i, ("stale", i, wslot[s], rtab[s], aslot[a])
            yield None
            assert wslot[s] == i and rtab[s] == i and aslot[a] == i, ("overwritten while read", i)
            reading[('w', s)] -= 1; reading[('a', a)] -= 1
            wempty[s].arrive(); aempty[a].arrive(); yield None
    agents = [W(), A()] + [C(c) for c in range(NC)]
    alive = list(range(len(agents)))
    steps = 0
    while alive or inflight:
        steps += 1
        if steps > 200000: raise AssertionError("deadlock")
        if inflight and (not alive or R.random() < 0.3):
            k = R.randrange(len(inflight)); kind, s, st, bar, b = inflight.pop(k)
            if kind == 'w': wslot[s] = st
            else: aslot[s] = st
            bar.complete(b); continue
        if not alive: continue
        i = R.choice(alive)
        try: next(agents[i])
        except StopIteration: alive.remove(i)
        # deadlock detection: nothing in flight and every alive agent blocked -> loop hits step limit
    return True

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    R = random.Random(1)
    for k in range(n):
        total, ws, as_, NC = R.randint(1, 40), R.randint(2, 8), R.randint(2, 4), R.choice([8, 12, 16])
        run(k, total, ws, as_, NC)
    print("ok", n)
    for m in ['no_wfull_wait', 'no_aempty_wait']:
        caught = 0
        for k in range(200):
            try: run(k, 20, 3, 2, 8, m)
            except AssertionError: caught += 1
        print(m, "caught in", caught, "of 200")
