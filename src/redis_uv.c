/*
 * redis_uv: hiredis <-> libuv. See include/rrcache/redis_uv.h.
 *
 * Writes are flushed eagerly: when hiredis has commands to send on a connected socket, a
 * uv_prepare_t writes them just before the loop next waits for events (one write for every
 * command queued since), and only a write the kernel could not take whole falls back to
 * waiting for the socket to become writable. Readability is watched all along. So a command costs
 * no epoll changes, where waiting for "writable" first would cost two (on, off) and a wake-up.
 */
#include "rrcache/redis_uv.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct adapter {
	redisAsyncContext *ac; /* NULL once hiredis let go of us */
	uv_poll_t poll;
	uv_prepare_t flush;
	int events;	 /* what poll watches */
	bool want_write; /* hiredis has output */
	unsigned closes;
	size_t max_input;
	size_t max_elements; /* of one array */
	size_t max_total;    /* elements of one reply, nested ones included */
	size_t total;	     /* of the reply being read */
	const char *refused; /* the protocol error that ended the connection, or NULL */
};

/* ---- reply objects, built as hiredis's defaults build them, with the checks above ---- */

/* A new object of type for task, linked into its parent array. NULL refuses the reply: the
 * reader stops with an error and hiredis disconnects. */
static redisReply *new_object(const redisReadTask *task, int type)
{
	struct adapter *a = task->privdata;
	if (!task->parent)
		a->total = 0;
	if (++a->total > a->max_total) {
		a->refused = "a reply with more elements than any rrcache asks for";
		return NULL;
	}
	if (!task->parent && a->ac) {
		const redisContext *c = &a->ac->c;
		/* A top-level reply needs a command waiting for it, or a subscription. */
		if (!a->ac->replies.head && !(c->flags & (REDIS_SUBSCRIBED | REDIS_MONITORING))) {
			a->refused = "a reply nobody asked for";
			return NULL;
		}
	}
	redisReply *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->type = type;
	if (task->parent) {
		redisReply *parent = task->parent->obj;
		parent->element[task->idx] = r;
	}
	return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
	char *buf = malloc(len + 1);
	if (!buf)
		return NULL;
	redisReply *r = new_object(task, task->type);
	if (!r) {
		free(buf);
		return NULL;
	}
	memcpy(buf, str, len);
	buf[len] = '\0';
	r->str = buf;
	r->len = (int)len;
	return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
	struct adapter *a = task->privdata;
	if ((size_t)elements > a->max_elements) {
		a->refused = "an array longer than any reply rrcache asks for";
		return NULL;
	}
	redisReply *r = new_object(task, REDIS_REPLY_ARRAY);
	if (!r)
		return NULL;
	if (elements > 0 && !(r->element = calloc((size_t)elements, sizeof(*r->element)))) {
		if (task->parent)
			((redisReply *)task->parent->obj)->element[task->idx] = NULL;
		free(r);
		return NULL;
	}
	r->elements = (size_t)elements;
	return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
	redisReply *r = new_object(task, REDIS_REPLY_INTEGER);
	if (r)
		r->integer = value;
	return r;
}

static void *create_nil(const redisReadTask *task)
{
	return new_object(task, REDIS_REPLY_NIL);
}

static redisReplyObjectFunctions guarded = {
	.createString = create_string,
	.createArray = create_array,
	.createInteger = create_integer,
	.createNil = create_nil,
	.freeObject = freeReplyObject,
};

const char *rrc_redis_uv_refused(const redisAsyncContext *ac)
{
	const struct adapter *a = ac->ev.data;
	return a ? a->refused : NULL;
}

/* Ends the connection for a protocol error: hiredis calls back every pending command with
 * NULL and the disconnect callback, then frees the context (and with it its buffer). */
static void refuse(struct adapter *a, const char *why)
{
	redisAsyncContext *ac = a->ac;
	a->refused = why;
	ac->err = REDIS_ERR_PROTOCOL;
	snprintf(ac->c.errstr, sizeof(ac->c.errstr), "%s", why);
	ac->errstr = ac->c.errstr;
	redisAsyncFree(ac);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct adapter *a = h->data;
	if (!a->ac)
		return;
	if (status < 0) {
		/* Reading makes hiredis see the error (or the failed connect) and disconnect. */
		redisAsyncHandleRead(a->ac);
		return;
	}
	if (events & UV_READABLE) {
		redisAsyncHandleRead(a->ac);
		/* What is left unparsed is one incomplete reply: past max_input it is larger than
		 * anything rrcache can use, and would otherwise grow without bound. */
		const redisReader *r = a->ac ? a->ac->c.reader : NULL;
		if (r && a->max_input && r->len - r->pos > a->max_input) {
			refuse(a, "a reply larger than any rrcache stores");
			return;
		}
	}
	/* The read may have freed the context (a disconnect): a->ac tells. */
	if (a->ac && (events & UV_WRITABLE))
		redisAsyncHandleWrite(a->ac);
}

static void watch(struct adapter *a, int events)
{
	if (events == a->events)
		return;
	a->events = events;
	if (events)
		uv_poll_start(&a->poll, events, on_poll);
	else
		uv_poll_stop(&a->poll);
}

static void on_flush(uv_prepare_t *h)
{
	struct adapter *a = h->data;
	uv_prepare_stop(&a->flush);
	if (!a->ac || !a->want_write)
		return;
	redisAsyncHandleWrite(a->ac);
	/* Still wanting to write: the socket buffer is full, wait until it drains. */
	if (a->ac && a->want_write)
		watch(a, a->events | UV_WRITABLE);
}

static void add_read(void *p)
{
	struct adapter *a = p;
	watch(a, a->events | UV_READABLE);
}

static void del_read(void *p)
{
	struct adapter *a = p;
	watch(a, a->events & ~UV_READABLE);
}

static void add_write(void *p)
{
	struct adapter *a = p;
	a->want_write = true;
	if (a->ac && (a->ac->c.flags & REDIS_CONNECTED))
		uv_prepare_start(&a->flush, on_flush);
	else
		watch(a, a->events | UV_WRITABLE); /* "writable" tells that connect finished */
}

static void del_write(void *p)
{
	struct adapter *a = p;
	a->want_write = false;
	uv_prepare_stop(&a->flush);
	watch(a, a->events & ~UV_WRITABLE);
}

static void on_closed(uv_handle_t *h)
{
	struct adapter *a = h->data;
	if (--a->closes == 0)
		free(a);
}

/* hiredis is freeing the context (and will close the socket right after): stop polling now,
 * free the adapter once libuv lets go of both handles. */
static void cleanup(void *p)
{
	struct adapter *a = p;
	a->ac = NULL;
	a->closes = 2;
	uv_close((uv_handle_t *)&a->poll, on_closed);
	uv_close((uv_handle_t *)&a->flush, on_closed);
}

int rrc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop, size_t max_input)
{
	if (ac->ev.data)
		return -EEXIST;
	struct adapter *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	int rc = uv_poll_init(loop, &a->poll, ac->c.fd);
	if (rc) {
		free(a);
		return rc;
	}
	uv_prepare_init(loop, &a->flush);
	a->ac = ac;
	a->poll.data = a;
	a->flush.data = a;
	ac->ev.addRead = add_read;
	ac->ev.delRead = del_read;
	ac->ev.addWrite = add_write;
	ac->ev.delWrite = del_write;
	ac->ev.cleanup = cleanup;
	ac->ev.data = a;
	a->max_input = max_input;
	a->max_elements = RRC_REDIS_MAX_ELEMENTS;
	a->max_total = RRC_REDIS_MAX_TOTAL;
	ac->c.reader->fn = &guarded;
	ac->c.reader->privdata = a;
	return 0;
}

void rrc_redis_uv_limits(redisAsyncContext *ac, size_t max_input, size_t max_elements,
			 size_t max_total)
{
	struct adapter *a = ac->ev.data;
	if (!a)
		return;
	a->max_input = max_input;
	a->max_elements = max_elements;
	a->max_total = max_total;
}

redisReader *rrc_redis_uv_reader(size_t max_elements, size_t max_total)
{
	redisReader *r = redisReaderCreateWithFunctions(&guarded);
	struct adapter *a = calloc(1, sizeof(*a));
	if (!r || !a) {
		if (r)
			redisReaderFree(r);
		free(a);
		return NULL;
	}
	a->max_elements = max_elements;
	a->max_total = max_total;
	r->privdata = a;
	return r;
}

void rrc_redis_uv_reader_free(redisReader *r)
{
	if (!r)
		return;
	free(r->privdata);
	redisReaderFree(r);
}

redisAsyncContext *rrc_redis_uv_connect(uv_loop_t *loop, const char *host, uint16_t port,
					const char *path, size_t max_input, char *why, size_t cap)
{
	redisAsyncContext *ac = path ? redisAsyncConnectUnix(path) : redisAsyncConnect(host, port);
	if (!ac || ac->err) {
		snprintf(why, cap, "%.100s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		return NULL;
	}
	if (rrc_redis_uv_attach(ac, loop, max_input) != 0) {
		redisAsyncFree(ac);
		snprintf(why, cap, "cannot watch the socket");
		return NULL;
	}
	return ac;
}
