/* router: the spool's single owner (DESIGN.md §1-2). Internal interfaces
 * between the router's own files; nothing here is used outside router/. */
#ifndef MXF_ROUTER_H
#define MXF_ROUTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "envelope.h"
#include "ipc.h"
#include "ipcconn.h"

struct mxf_config;
struct mxf_spool;
struct mxf_rulesdb;
struct mxf_ruleset;
struct mxf_srs;

/* ROLE_SIGNER: deliverd's worker threads asking for DKIM/ARC signatures
 * (sign.c), on connections of their own, authenticated as deliverd's user. */
enum role { ROLE_NONE, ROLE_SMTPD, ROLE_DELIVERD, ROLE_BOUNCER, ROLE_CTL, ROLE_SIGNER, ROLE_WORKERD,
	    ROLE_N };

/* A file opened for a client (OPEN) and not yet committed or aborted. */
struct opened {
	struct opened *next;
	char qid[MXF_QID_SIZE];
	int fd;
	uint64_t stamp; /* its msg/ entry, for the group commit's msg/ fsync */
	bool shown;     /* a descriptor to it went to another process (a worker) */
	bool reused;    /* a spare content file: old bytes past what smtpd wrote */
};

struct commit; /* a durable commit running on the thread pool */

/* One connected daemon. */
struct peer {
	struct peer *next, *prev;
	struct mxf_ipcconn *conn;
	enum role role;
	pid_t pid;
	uid_t uid;
	bool closing;
	struct opened *opened;
	unsigned nopened;
	struct commit *commits; /* running commits that will answer on this peer */
	unsigned jobs;          /* deliverd: delivery jobs in flight */
	uint64_t smtp_active;   /* smtpd: sessions open, from its last SMTPD_STATS */
	uint64_t serial;        /* unique per connection: what a signing job answers to */
	unsigned signing;       /* signer: RSA signatures in the signing threads */
};

struct router {
	uv_loop_t *loop;
	struct mxf_config *cfg;
	const char *hostname;
	struct mxf_spool *spool;
	struct mxf_rulesdb *rdb;
	struct mxf_ruleset *rules;
	struct mxf_srs *srs;
	int64_t retry_min, retry_max, lifetime;
	int64_t *sched; /* explicit retry schedule ([router] retry_schedule), or NULL */
	size_t nsched;
	unsigned dom_conc, dom_rate; /* per destination domain: jobs in flight, jobs/minute */
	char subaddr_sep[16];
	bool local_cs;
	long long rules_version; /* PRAGMA data_version of the loaded rule set */
	/* peer authentication */
	bool dev;
	uid_t self_uid;
	bool role_uid_known[ROLE_N];
	uid_t role_uid[ROLE_N];
	/* listener */
	int listen_fd;
	uv_poll_t listen_poll;
	bool stopping;
	unsigned commits_running;
	unsigned removals_pending; /* unlinks of finished messages on the thread pool */
	struct peer *peers;
	unsigned npeers;
	uint64_t next_req;
};

extern struct router R;

/* peer.c */
int peer_listen(const char *path);
void peer_close(struct peer *p);
void peer_close_all(void);
/* The live connection with that serial, or NULL (closed meanwhile). */
struct peer *peer_find_serial(uint64_t serial);
int peer_send(struct peer *p, const struct mxf_ipc_msg *m, int fd);
struct peer *peer_find_role(enum role role);
const char *role_name(enum role r);
/* A reply helper: F_REQ, F_CODE, F_ESC, F_TEXT (and optional F_QID). */
int peer_reply(struct peer *p, uint16_t type, uint64_t req, unsigned code, const char *esc,
	       const char *text, const char *qid, int fd);
/* The same with one more string field (xtag = xval) when xval is not empty. */
int peer_reply_x(struct peer *p, uint16_t type, uint64_t req, unsigned code, const char *esc,
		 const char *text, const char *qid, int fd, uint16_t xtag, const char *xval);
void router_maybe_exit(void);

/* receive.c: smtpd and bouncer submissions */
void recv_rcpt_check(struct peer *p, const struct mxf_ipc_view *v);
void recv_open(struct peer *p, const struct mxf_ipc_view *v);
int recv_commit(struct peer *p, const struct mxf_ipc_view *v);
void recv_abort(struct peer *p, const struct mxf_ipc_view *v);
void recv_peer_gone(struct peer *p);
/* DSN_PARSE_REPLY: the bouncer's reading of mail returned to an SRS address. */
int recv_dsn_parsed(struct peer *p, const struct mxf_ipc_view *v);

/* A worker's reply to queue with the message (issue 13): from the null
 * sender to the original's sender, as a new message. */
struct recv_reply {
	char *raw;  /* the whole message, CRLF lines (checked by work.c) */
	char *from; /* the custom address that was answered (DKIM: its domain) */
	char *tag;  /* the rule */
};
void recv_reply_free(struct recv_reply *r);
/* The end of a COMMIT (after any worker decided): SRS, Received plus
 * xheaders (smtpd's Authentication-Results, a worker's X- headers), durable
 * commit, reply. p NULL: the client is gone, nothing is kept. Takes o and e,
 * and reply (or NULL), which is committed right after the message, before
 * the client's 250; a reply that cannot be kept is logged, never a failure
 * of the message. */
void recv_commit_finish(struct peer *p, uint64_t req, struct opened *o, struct mxf_env *e,
			bool forwards, const char *single, const char *tls, bool bouncer,
			const char *xheaders, struct recv_reply *reply);
/* Refuses a COMMIT: nothing kept (p NULL: no reply). Takes o and e. */
void recv_refuse(struct peer *p, uint64_t req, struct opened *o, struct mxf_env *e, unsigned code,
		 const char *ecode, const char *text);
/* The default ORCPT of a recipient given at RCPT. */
void recv_orcpt_of(const char *addr, char *out, size_t cap);

/* work.c (issue 13): recipients whose rule names a worker. */
struct workbatch;
struct workbatch *work_batch_new(void);
void work_batch_free(struct workbatch *b);
/* norm: the custom address; given: as the client wrote it. */
int work_batch_add(struct workbatch *b, const char *norm, const char *given, const char *worker,
		   const char *tag);
/* The DSN facts of the last recipient added. */
int work_batch_set_dsn(struct workbatch *b, const char *notify, const char *orcpt);
/* Sends the WORK requests; when all have answered (or failed, or the
 * deadline passed), refuses the COMMIT or goes on with recv_commit_finish.
 * Takes b, o and e. */
void work_run(struct workbatch *b, struct peer *p, uint64_t req, struct opened *o,
	      struct mxf_env *e, bool forwards, const char *single, const char *tls,
	      const char *auth_results);
int work_result(struct peer *p, const struct mxf_ipc_view *v);
void work_peer_gone(struct peer *p);

/* queue.c: the in-memory index and the queue manager */
void queue_init(void);
void queue_recover(void);
/* A committed message now sitting in dir (incoming or active). Takes e.
 * content_private: no process but deliverd was handed its content (its
 * inode may be reused once the message is removed). */
void queue_add(struct mxf_env *e, int dir, bool content_private);
void queue_deliverd_up(struct peer *p);
void queue_bouncer_up(struct peer *p);
void queue_peer_gone(struct peer *p);
/* Return <0 for a protocol violation (the caller closes the peer). */
int queue_deliver_result(struct peer *p, const struct mxf_ipc_view *v);
int queue_bounce_done(struct peer *p, const struct mxf_ipc_view *v);
int queue_reload_rules(char *err, size_t errlen);
/* Polls rules.db's data_version and reloads on a change (every 500 ms). */
void queue_rules_poll_start(void);
/* QUEUE_CTL from mxferryctl: <0 for a protocol violation. */
int queue_ctl(struct peer *p, const struct mxf_ipc_view *v);

/* Messages in the in-memory queue per state directory (indexed by
 * enum mxf_spool_dir; adds to counts). */
void queue_count(size_t *counts);

/* metrics.c: the Prometheus endpoint ([main] metrics_listen) and its counters */
int metrics_start(void);
void metrics_stop(void);
void metrics_received(const struct mxf_env *e);
void metrics_recipient(const char *status);
/* One refusal (every one, before the activity log's flood limit); rcpt: it
 * refused a recipient, which counts as a rejected recipient too. */
void metrics_refusal(const char *reason, bool rcpt);
void metrics_access_check(bool at_mail);
/* One recipient's result: code, whether a non-2xx is final (5xx, expired),
 * seconds since arrival (for a 2xx). */
void metrics_delivery(unsigned code, bool final, double latency);
void metrics_dns_error(void);
/* SMTPD_STATS: <0 when malformed. */
int metrics_smtpd_stats(struct peer *p, const struct mxf_ipc_view *v);

/* activity.c */
int activity_open(const char *path);
void activity_close(void);
/* One row. e and r may be NULL (a refused RCPT has neither). */
void activity_add(const struct mxf_env *e, const struct mxf_env_rcpt *r, const char *rcpt,
		  const char *status, const char *remote_host, const char *reply);
/* Whether a written row says queue ID qid came from sender
 * (case-insensitive); rows still queued for the writer are not seen. */
bool activity_sent_by(const char *qid, const char *sender);
/* Rows not written: the writer's queue was full (failed false), or their
 * transaction failed twice or the row alone failed (failed true). */
uint64_t activity_dropped(bool failed);

/* sign.c: the DKIM/ARC signing oracle */
/* (Re)loads the enabled keys of rules.db; keeps the old set if the DB fails. */
void sign_load(void);
/* Also stops the signing threads (waiting for the operations they are in). */
void sign_free(void);
/* Issue 13: loads (creating it, 0600, like srs.secret) the webhook secret,
 * the first line of path; fatal when impossible. */
void sign_webhook_load(const char *path);
/* SIGN from a signer: <0 for a protocol violation. */
int sign_request(struct peer *p, const struct mxf_ipc_view *v);
/* Adds to a DELIVER the F_DKIM keys to sign with (SRS domain, receiving
 * domains of the job's recipients) and the F_ARC key. */
int sign_add_specs(struct mxf_ipc_msg *msg, const struct mxf_env *e, const size_t *ridx,
		   size_t n);
/* access.c (issue 11): the allow/block lists and smtpd's refusal log */
int access_reload(void);
int access_check(struct peer *p, const struct mxf_ipc_view *v);
int access_reject_log(struct peer *p, const struct mxf_ipc_view *v);
/* One refusal for the activity log, subject to the per-network rate
 * ([router] reject_log_rate); reason is its keyword ("relay", "dnsbl:ZONE"...). */
void access_reject_row(const char *ip, const char *helo, const char *sender, const char *rcpt,
		       const char *rule, const char *action, const char *reply, const char *reason);
/* activity.c: a refusal row (status rejected) standing for count refusals. */
void activity_reject(const char *ip, const char *helo, const char *sender, const char *rcpt,
		     const char *rule, const char *action, const char *reply, const char *reason,
		     unsigned count);

/* util */
void rfc5322_date(time_t t, char *out, size_t len);

#endif
