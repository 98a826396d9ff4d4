/*
 * pool: fixed-size free list. See include/rrcache/pool.h.
 */
#include "rrcache/pool.h"

#include <stdlib.h>
#include <string.h>

void rrc_pool_init(struct rrc_pool *p, size_t size, unsigned keep)
{
	p->free_list = NULL;
	p->size = RRC_MAX(size, sizeof(void *));
	p->n_free = 0;
	p->keep = keep;
}

void *rrc_pool_get(struct rrc_pool *p, size_t size)
{
	if (size > p->size)
		return calloc(1, size);
	void *obj = p->free_list;
	if (!obj)
		return calloc(1, p->size);
	memcpy(&p->free_list, obj, sizeof(void *));
	p->n_free--;
	memset(obj, 0, p->size);
	return obj;
}

void rrc_pool_put(struct rrc_pool *p, void *obj, size_t size)
{
	if (!obj)
		return;
	if (size > p->size || p->n_free >= p->keep) {
		free(obj);
		return;
	}
	memcpy(obj, &p->free_list, sizeof(void *));
	p->free_list = obj;
	p->n_free++;
}

void rrc_pool_drain(struct rrc_pool *p)
{
	while (p->free_list) {
		void *obj = p->free_list;
		memcpy(&p->free_list, obj, sizeof(void *));
		free(obj);
	}
	p->n_free = 0;
}
