/* An intrusive doubly-linked list, after libuv's QUEUE and the Linux
 * kernel's list_head: the links live inside the element, so putting an
 * element on a list never allocates and taking it off is O(1).
 *
 * A list head is circular and must be initialised (wstun__list_init). An
 * element's links are NULL while it is on no list, which is what calloc
 * gives, so removing an element twice, or one never added, is harmless.
 * An element is on at most one list per wstun__list member. */
#ifndef WSTUN_LIST_H
#define WSTUN_LIST_H

#include <stddef.h>

typedef struct wstun__list {
  struct wstun__list *prev, *next;
} wstun__list;

/* The element that holds `link` as its member `field`. */
#define wstun__list_entry(link, type, field)                                   \
  ((type *)(void *)((char *)(link)-offsetof(type, field)))

static inline void wstun__list_init(wstun__list *head) {
  head->prev = head->next = head;
}

static inline int wstun__list_empty(const wstun__list *head) {
  return head->next == head;
}

/* 1 when the element is on a list. */
static inline int wstun__list_linked(const wstun__list *link) {
  return link->next != NULL;
}

static inline void wstun__list_insert_after(wstun__list *at,
                                            wstun__list *link) {
  link->prev = at;
  link->next = at->next;
  at->next->prev = link;
  at->next = link;
}

static inline void wstun__list_push_back(wstun__list *head, wstun__list *link) {
  wstun__list_insert_after(head->prev, link);
}

static inline void wstun__list_push_front(wstun__list *head,
                                          wstun__list *link) {
  wstun__list_insert_after(head, link);
}

static inline void wstun__list_remove(wstun__list *link) {
  if (link->next == NULL)
    return;
  link->prev->next = link->next;
  link->next->prev = link->prev;
  link->prev = link->next = NULL;
}

/* The first element's link, or NULL when empty. */
static inline wstun__list *wstun__list_front(const wstun__list *head) {
  return head->next == head ? NULL : head->next;
}

/* The link after `link`, or NULL at the end. */
static inline wstun__list *wstun__list_after(const wstun__list *head,
                                             const wstun__list *link) {
  return link->next == head ? NULL : link->next;
}

static inline size_t wstun__list_count(const wstun__list *head) {
  size_t n = 0;
  for (const wstun__list *l = head->next; l != head; l = l->next)
    n++;
  return n;
}

/* Walks the list; the body may remove the current element (and only it). */
#define wstun__list_foreach_safe(link, tmp, head)                              \
  for ((link) = (head)->next, (tmp) = (link)->next; (link) != (head);          \
       (link) = (tmp), (tmp) = (link)->next)

#define wstun__list_foreach(link, head)                                        \
  for ((link) = (head)->next; (link) != (head); (link) = (link)->next)

#endif
