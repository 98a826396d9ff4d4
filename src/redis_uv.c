/*
 * redis_uv: hiredis <-> libuv. See include/rrcache/redis_uv.h.
 */
#include "rrcache/redis_uv.h"

#include <errno.h>
#include <stdlib.h>

struct adapter {
	redisAsyncContext *ac; /* NULL once hiredis let go of us */
	uv_poll_t poll;
	int events;
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

static void update(struct adapter *a, int events)
{
	a->events = events;
	if (events)
		uv_poll_start(&a->poll, events, on_poll);
	else
		uv_poll_stop(&a->poll);
}

static void add_read(void *p)
{
	struct adapter *a = p;
	update(a, a->events | UV_READABLE);
}

static void del_read(void *p)
{
	struct adapter *a = p;
	update(a, a->events & ~UV_READABLE);
}

static void add_write(void *p)
{
	struct adapter *a = p;
	update(a, a->events | UV_WRITABLE);
}

static void del_write(void *p)
{
	struct adapter *a = p;
	update(a, a->events & ~UV_WRITABLE);
}

static void on_closed(uv_handle_t *h)
{
	free(h->data);
}

/* hiredis is freeing the context (and will close the socket right after): stop polling now,
 * free the adapter once libuv lets go of the handle. */
static void cleanup(void *p)
{
	struct adapter *a = p;
	a->ac = NULL;
	uv_close((uv_handle_t *)&a->poll, on_closed);
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
	a->ac = ac;
	a->poll.data = a;
	ac->ev.addRead = add_read;
	ac->ev.delRead = del_read;
	ac->ev.addWrite = add_write;
	ac->ev.delWrite = del_write;
	ac->ev.cleanup = cleanup;
	ac->ev.data = a;
	return 0;
}
