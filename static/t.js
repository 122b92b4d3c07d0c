/*
 * t.js: the collector snippet. One IIFE, one global: `collector`.
 *
 *   <script async src="https://collect.example/t.js" data-site="my_store"></script>
 *   <script>window.collector=window.collector||function(){(collector.q=collector.q||[]).push(arguments)}</script>
 *
 *   collector('track', TYPE, PROPS)   collector('identify', {user_id, account_id})
 *   collector('page')                 collector('consent', false | true)
 *   collector('flush')                collector('debug', true | false)
 *
 * It posts {"site": ..., "consent": true, "events": [...]} as a JSON string (so text/plain:
 * no CORS preflight) to `collect` next to this script (.../_c/t.js posts to .../_c/collect,
 * so the collector also works under a path of the shop's own host), with credentials so
 * the collector's HttpOnly visitor cookie flows. Each event carries exactly
 * the fields of docs/architecture.md; PROPS go under `props` as given.
 *
 * Delivery: events wait in a queue, sent 10 events (and 20,000 characters of
 * JSON) a request at most: 1 s after the first waiting event, in the next task
 * once 10 wait, on collector('flush'), and by sendBeacon when the page is
 * hidden or left. One fetch is in flight at a time. Network errors, 408, 429
 * and 5xx are retried with exponential backoff and jitter, after Retry-After
 * (seconds) when given; any other answer ends the batch.
 *
 * Nothing is lost at page leave: every event stays in localStorage (_col_q)
 * until an answer covers it (2xx, or a refusal for good). A beacon gets no
 * answer, so beaconed events stay stored and are sent again from the next page
 * of the site, whatever became of the beacon (collector down, restarting,
 * blocked); the collector's dedupe by event id drops the copies that had
 * arrived. The store is written when flushed, hidden or answered, not per
 * event (track() stays cheap), and holds 200 events at most; an event older
 * than 24 h is dropped at load, unsent, because the collector forgets ids
 * after its 24 h dedupe window and an older copy could arrive twice. The
 * site's tabs share the store: a write keeps what other tabs left there and
 * replaces this tab's own events, and a new page takes over everything stored,
 * so two tabs may both send an event: the dedupe absorbs that too. Storage
 * refused or full: the snippet works from memory, and nothing throws.
 *
 * Debug: with data-debug on the tag, or after collector('debug', true) until
 * collector('debug', false), it logs each batch it sends (fetch or beacon) and
 * each answer of the collector (status and body: what was accepted, each
 * refused event with its reasons, or the error) by console.log('collector', ...).
 * Silent otherwise.
 *
 * Privacy: nothing is sent until the site's settings are known
 * (GET /sites/<site>/settings.json, cached in localStorage). With
 * require_consent, nothing is sent nor stored until consent(true). With
 * honor_gpc and Global Privacy Control on, or after consent(false), nothing
 * is collected and the stored ids and queue are overwritten with `false`.
 *
 * Manners: no eval; every entry point is wrapped so nothing throws into the
 * page, and swallowed errors are counted in collector.errors (read-only).
 * A second copy of the script sees the first and leaves. Written for the
 * browsers of 2020 on (ES2020, IntersectionObserver, keepalive fetch).
 *
 * The minifier (rjsmin) only strips whitespace and comments, and the budget
 * is 2,048 bytes gzip: hence short names, and parameters used as locals.
 *   E swallowed errors   w(f) f, wrapped   g/p localStorage get/put (JSON)
 *   S site settings   C consent   DB debug on   U identify()'s ids   A anonymous id
 *   Z session [id, time of its last event]   Q queue   I batch in flight
 *   T flush timer   RT retry timer   N failures in a row
 *   L URL of the last page view   M card -> timer, or -1 once seen
 *   ev(type, props) new event   soon() flush in 1 s, or next task at 10 events
 *   fl() flush   go() send a batch by fetch   re() retry later   bk() beacon all
 *   sv(o, d) store the ids and, unless o, the queue (d: answered events)
 *   nb(a) how many of a's events the first batch takes   bd() request body
 *   lg() log when debugging   cfg() load the settings   pv() page view
 *   pr() a card's props   wa() watch cards for element_visible
 */
(function (W, D, X, E, w) {
  E = 0;
  w = f => (...a) => {
    try {
      return f(...a)
    } catch {
      E++
    }
  };

  w(() => {
    var old = W.collector;
    if (old?.errors >= 0) return; // loaded twice: the first copy keeps working

    var me = D.currentScript || D.querySelector('script[src$="/t.js"]'),
      site = me?.dataset.site;
    if (!site) return;

    // the folder the script was loaded from, as https://host/ or https://host/_c/ (a URL joins as its href)
    var O = new URL('.', me.src),
      EP = O + 'collect',
      SEL = '[data-recommendation-id]',
      // storage may be missing or refused: the snippet then works from memory
      g = k => {
        try {
          return JSON.parse(localStorage['_col_' + k])
        } catch {}
      },
      p = (k, v) => {
        try {
          localStorage['_col_' + k] = JSON.stringify(v)
        } catch {}
      },
      // 20 random characters of [a-z0-9]
      rid = () => crypto.getRandomValues(new Uint8Array(20)).reduce((s, b) => s + (b % 36).toString(36), ''),
      S = g('s'),
      C = g('c'),
      DB = 'debug' in me.dataset,
      U = {},
      A,
      Z,
      // what earlier pages (and other tabs) left; a day at most: a stored event may have arrived (a beacon gets
      // no answer), and the collector's dedupe forgets its id after 24 h
      Q = (g('q') || []).filter(e => e.ts > Date.now() - 864e5),
      I = [],
      T,
      RT,
      N = 0,
      L,
      M,
      io,
      // collect nothing: consent refused, or GPC honoured
      off = () => C === !1 || S?.honor_gpc && X.globalPrivacyControl,
      // store and send nothing: as above, or consent required and not given
      hd = () => off() || S?.require_consent && !C,
      lg = (...a) => DB && console.log('collector', ...a),
      // o: only the ids (the queue is saved when flushed, hidden or answered). The stored queue is shared by the
      // site's tabs: this tab's events replace their stored copies, d (answered) leave, the others stay
      sv = (o, d, h, k) => {
        h = hd();
        p('i', !h && { a: A, z: Z, u: U });
        o || (k = I.concat(Q, d || []).map(e => e.id), p('q', !h && (g('q') || []).filter(e => !k.includes(e.id)).concat(I, Q).slice(-200)))
      },

      ev = (t, q, n, d, x) => {
        if (off() || !t) return;
        n = Date.now();
        x = g('i') || {}; // the ids as another tab may have left them
        A = x.a || A || rid();
        U = x.u || U;
        Z = x.z || Z;
        n - Z?.[1] < 18e5 || (Z = [rid()]); // a new session after 30 min without events
        Z[1] = n;
        try {
          d = localStorage._dep_id // Depict's own session id wins
        } catch {}
        Q.push({
          id: rid(),
          type: t,
          ts: n,
          anonymous_id: A,
          session_id: d || Z[0],
          user_id: U.user_id,
          account_id: U.account_id,
          url: location.href,
          document_referrer: D.referrer,
          document_width: D.documentElement.clientWidth,
          props: JSON.parse(JSON.stringify(q || {})) // a copy, and a bad PROPS fails here, not later
        });
        Q = Q.slice(-200);
        sv(1);
        soon()
      },
      // in the next task at 10 events if a send can start (fetch() itself
      // costs the main thread ~0.5 ms: not inside a track call), else in 1 s
      soon = () => Q[9] && S && !RT && !I[0] ? (clearTimeout(T), T = setTimeout(fl)) : T || (T = setTimeout(fl, 1e3)),
      fl = w(() => {
        clearTimeout(T);
        T = 0;
        sv();
        go()
      }),

      // consent: true once given (a site that requires it drops events without it); debug: the batch
      bd = b => (lg(b), JSON.stringify({ site, consent: C, events: b })),
      // batches of at most 10 events (the collector's Web Events budget per request) and 20,000 UTF-16 code units of JSON,
      // which is at most 60 KB of UTF-8 whatever the text
      nb = (a, i = 0, n = 0) => {
        while (a[i] && i < 10 && (n += JSON.stringify(a[i]).length + 1) < 2e4 || !i) i++;
        return i
      },
      go = b => {
        if (!S) return cfg();
        if (I[0] || RT || hd() || !Q[0]) return;
        b = Q.slice(0, nb(Q));
        // a string body is sent as text/plain;charset=UTF-8
        fetch(EP, { method: 'POST', body: bd(b), keepalive: !0, credentials: 'include' }).then(
          w((r, s) => {
            s = r.status;
            // debug: the answer as it came (what was accepted, each refused event and why, or the error)
            DB && r.text().then(t => lg(s, t));
            s == 408 || s == 429 || s > 499
              ? re(r.headers.get('Retry-After'))
              : (I = [], N = 0, sv(0, b), go()) // accepted, or refused for good (other 4xx): never sent again
          }),
          w(re)
        );
        Q = Q.slice((I = b).length)
      },
      re = a => {
        Q = I.concat(Q);
        I = [];
        RT = setTimeout(
          w(() => {
            RT = 0;
            go()
          }),
          ~~a * 1e3 + (500 << Math.min(N++, 7)) * (.5 + Math.random()) // Retry-After, plus backoff with jitter
        )
      },
      // a beacon gets no answer: its events are stored first, and stay until a later answer covers them
      bk = k => {
        sv();
        if (S && !hd()) for (; Q[0] && X.sendBeacon(EP, bd(Q.slice(0, k = nb(Q)))); ) Q = Q.slice(k)
      },
      cfg = () =>
        fetch(O + 'sites/' + site + '/settings.json')
          .then(r => r.ok && r.json())
          .then(w(j => j && (p('s', S = j), sv(), soon())), () => 0),

      pr = (t, d) => (
        d = t.dataset, { recommendation_id: d.recommendationId, click_location: d.clickLocation, product_id: d.productId }
      ),
      wa = n => n.querySelectorAll?.(SEL).forEach(c => io.observe(c)), // observing twice is a no-op
      // f: count it even if the URL is the one of the last page view
      pv = (f, h) => {
        h = location.href;
        if (f == 1 || h != L) {
          L = h;
          M?.forEach(clearTimeout);
          M = new Map;
          io.disconnect();
          wa(D);
          ev('page_view')
        }
      },
      cm = {
        track: ev,
        flush: fl,
        debug: a => DB = a,
        page: () => pv(1),
        identify: a => {
          U = { user_id: a.user_id, account_id: a.account_id };
          sv()
        },
        consent: a => {
          p('c', C = !!a);
          if (!C) Q = [], I = [], A = Z = 0, U = {};
          sv();
          soon()
        }
      },
      f = w((c, a, b) => cm[c]?.(a, b)),
      on = (o, e, f) => o.addEventListener(e, w(f), !0);

    // element_visible: 60% of a card in view for 500 ms, once per card and page
    io = new IntersectionObserver(
      w(l =>
        l.map((e, t, k) => {
          t = e.target;
          k = M.get(t);
          // k: the card's timer, or -1 once seen
          e.intersectionRatio < .6
            ? k > 0 && M.set(t, clearTimeout(k))
            : k || M.set(t, setTimeout(w(() => {
                M.set(t, -1);
                ev('element_visible', pr(t))
              }), 500))
        })
      ),
      { threshold: .6 }
    );
    // cards added later: look inside the nodes whose children changed
    new MutationObserver(w(l => l.map(m => wa(m.target)))).observe(D, {
      childList: !0,
      subtree: !0
    });

    // SPA navigation; the page's own errors stay the page's
    ['pushState', 'replaceState'].map((k, o) => {
      o = history[k];
      history[k] = (...a) => (a = o.apply(history, a), w(pv)(), a)
    });
    on(W, 'popstate', pv);
    on(W, 'pageshow', e => e.persisted && pv(1)); // back from the bfcache
    on(W, 'pagehide', bk);
    on(D, 'visibilitychange', () => D.hidden && bk());
    on(W, 'online', () => {
      clearTimeout(RT);
      RT = 0;
      go()
    });
    on(D, 'click', (e, t) => (t = e.target.closest?.(SEL)) && ev('click', pr(t)));

    (W.collector = f).__defineGetter__('errors', () => E);
    old?.q?.map(a => f(...a));
    pv();
    cfg()
  })()
})(window, document, navigator);
