/* The intrusive list (wstun_list.h) and the teardown counter
 * (wstun_closer.h): order, removal while walking, double removal, and a
 * closer that frees only after every handle closed. */
#include "wstun_closer.h"
#include "wstun_list.h"

#include <uv.h>

#include "test.h"

typedef struct item {
  int v;
  wstun__list link;
} item;

static int values(wstun__list *head, int *out, int max) {
  int n = 0;
  wstun__list *l;
  wstun__list_foreach(l, head) {
    if (n < max)
      out[n] = wstun__list_entry(l, item, link)->v;
    n++;
  }
  return n;
}

TEST(push_order_and_count) {
  wstun__list head;
  wstun__list_init(&head);
  CHECK(wstun__list_empty(&head));
  CHECK(wstun__list_front(&head) == NULL);
  item it[4] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
  for (int i = 0; i < 4; i++)
    CHECK(!wstun__list_linked(&it[i].link));
  wstun__list_push_back(&head, &it[1].link);
  wstun__list_push_back(&head, &it[2].link);
  wstun__list_push_front(&head, &it[0].link);
  wstun__list_push_back(&head, &it[3].link);
  int got[8];
  CHECK_EQ_INT(values(&head, got, 8), 4);
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(got[i], i + 1);
  CHECK_EQ_INT(wstun__list_count(&head), 4);
  CHECK(wstun__list_front(&head) == &it[0].link);
  CHECK(wstun__list_after(&head, &it[3].link) == NULL);
  CHECK(wstun__list_after(&head, &it[1].link) == &it[2].link);
}

TEST(remove_while_walking_and_twice) {
  wstun__list head;
  wstun__list_init(&head);
  item it[5];
  for (int i = 0; i < 5; i++) {
    it[i] = (item){i, {0}};
    wstun__list_push_back(&head, &it[i].link);
  }
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &head) {
    if (wstun__list_entry(l, item, link)->v % 2 == 0)
      wstun__list_remove(l);
  }
  int got[8];
  CHECK_EQ_INT(values(&head, got, 8), 2);
  CHECK_EQ_INT(got[0], 1);
  CHECK_EQ_INT(got[1], 3);
  CHECK(!wstun__list_linked(&it[0].link));
  wstun__list_remove(&it[0].link); /* not on a list: nothing happens */
  wstun__list_remove(&it[1].link);
  wstun__list_remove(&it[1].link);
  CHECK_EQ_INT(values(&head, got, 8), 1);
  CHECK_EQ_INT(got[0], 3);
  wstun__list_remove(&it[3].link);
  CHECK(wstun__list_empty(&head));
  /* back on after removal */
  wstun__list_push_back(&head, &it[3].link);
  CHECK_EQ_INT(wstun__list_count(&head), 1);
}

typedef struct owner {
  wstun__closer closer;
  uv_timer_t a, b;
  int freed;
} owner;

static void owner_closed(wstun__closer *c) {
  owner *o = wstun__list_entry(c, owner, closer);
  o->freed++;
}

TEST(closer_fires_once_after_every_handle) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  owner o = {0};
  uv_timer_init(&loop, &o.a);
  uv_timer_init(&loop, &o.b);
  wstun__closer_start(&o.closer, owner_closed);
  wstun__closer_close_handle(&o.closer, (uv_handle_t *)&o.a);
  wstun__closer_close_handle(&o.closer, (uv_handle_t *)&o.b);
  wstun__closer_add(&o.closer);  /* something closed by hand */
  wstun__closer_done(&o.closer); /* the caller's hold */
  CHECK_EQ_INT(o.freed, 0);      /* handle closes complete later */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(o.freed, 0); /* the hand-closed one is still pending */
  wstun__closer_done(&o.closer);
  CHECK_EQ_INT(o.freed, 1);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(closer_without_handles_fires_on_release) {
  owner o = {0};
  wstun__closer_start(&o.closer, owner_closed);
  CHECK_EQ_INT(o.freed, 0);
  wstun__closer_done(&o.closer);
  CHECK_EQ_INT(o.freed, 1);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(push_order_and_count),
      T(remove_while_walking_and_twice),
      T(closer_fires_once_after_every_handle),
      T(closer_without_handles_fires_on_release),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
