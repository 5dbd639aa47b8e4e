/* The request's one reference count, without a tunnel: which event drops
 * which reference, that each drops it once, that the owner's on_release
 * runs exactly once at zero, and that a ref/unref pair inside on_release
 * (what letting go of a backend may do) does not free twice. */
#include "wstun_request.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

static int released;
static int nested;

static void on_release(wstun_request *req) {
  released++;
  if (nested) {
    wstun__request_ref(req);
    wstun__request_unref(req);
  }
}

static const wstun__request_cbs cbs = {.on_release = on_release};
static const wstun__logger quiet = {.level = WSTUN_LOG_ERROR};

static wstun_request *fresh(void) {
  released = 0;
  wstun_request *req = wstun__request_new(NULL, 1, &quiet, &cbs, NULL);
  if (req == NULL)
    abort();
  CHECK_EQ_INT(req->refs, 2);
  CHECK_EQ_INT(req->rx_ref, 1);
  CHECK_EQ_INT(req->tx_ref, 1);
  return req;
}

TEST(message_then_response) {
  wstun_request *req = fresh();
  wstun__request_msg_ended(req);
  wstun__request_msg_ended(req); /* once only */
  CHECK_EQ_INT(req->refs, 1);
  CHECK_EQ_INT(req->msg_ended, 1);
  CHECK_EQ_INT(released, 0);
  wstun__request_resp_done(req);
  CHECK_EQ_INT(released, 1);
}

TEST(response_then_message) {
  wstun_request *req = fresh();
  wstun__request_resp_done(req);
  wstun__request_resp_done(req);
  CHECK_EQ_INT(req->refs, 1);
  wstun__request_msg_ended(req);
  CHECK_EQ_INT(released, 1);
}

TEST(a_pin_outlives_the_exchange) {
  wstun_request *req = fresh();
  wstun__request_ref(req);          /* a caller up the stack */
  wstun__request_end_exchange(req); /* the tunnel died */
  CHECK(req->t == NULL);
  CHECK_EQ_INT(req->refs, 1);
  CHECK_EQ_INT(released, 0);
  /* a late answer goes nowhere */
  wstun__request_answer(req, 502, "gone");
  CHECK(req->resp == NULL);
  CHECK_EQ_INT(req->resp_started, 0);
  wstun__request_unref(req);
  CHECK_EQ_INT(released, 1);
}

TEST(a_handler_reference_holds_it) {
  wstun_request *req = fresh();
  req->handler_ref = 1;
  wstun__request_ref(req);
  wstun__request_msg_ended(req);
  wstun__request_end_exchange(req); /* drops the response's only */
  CHECK_EQ_INT(req->refs, 1);
  CHECK_EQ_INT(released, 0);
  nested = 1;
  wstun__request_unref(req);
  nested = 0;
  CHECK_EQ_INT(released, 1);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(message_then_response), T(response_then_message),
      T(a_pin_outlives_the_exchange), T(a_handler_reference_holds_it)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
