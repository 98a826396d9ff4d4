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
#include <stdbool.h>
#include <stdlib.h>

struct adapter {
	redisAsyncContext *ac; /* NULL once hiredis let go of us */
	uv_poll_t poll;
	uv_prepare_t flush;
	int events;	 /* what poll watches */
	bool want_write; /* hiredis has output */
	unsigned closes;
};

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
	if (events & UV_READABLE)
		redisAsyncHandleRead(a->ac);
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

int rrc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
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
	return 0;
}
