#include "agent/admission.h"

#include <catch2/catch.hpp>

namespace lifeboat::agent {
namespace {

TEST_CASE("strangers have their own budget and the oldest makes room", "[admission]") {
  Admission a(AdmissionLimits{/*max_pending=*/4, /*max_pending_per_address=*/2,
                              /*max_admitted=*/3});
  // One address fills its share: its own oldest connection goes.
  CHECK_FALSE(a.Arrive(1, "10.0.0.9:5000"));
  CHECK_FALSE(a.Arrive(2, "10.0.0.9:5001"));
  CHECK(a.Arrive(3, "10.0.0.9:5002") == std::optional<uint64_t>(1));
  CHECK(a.pending() == 2);
  // Other addresses fill the total: the oldest pending overall goes.
  CHECK_FALSE(a.Arrive(4, "10.0.0.1:1"));
  CHECK_FALSE(a.Arrive(5, "[::1]:2"));
  CHECK(a.Arrive(6, "10.0.0.2:1") == std::optional<uint64_t>(2));
  CHECK(a.evicted_total() == 2);
  // A newcomer that proves itself leaves the pending budget.
  CHECK(a.Admit(6));
  CHECK(a.pending() == 3);
  CHECK(a.admitted() == 1);
}

TEST_CASE("admitted connections are capped and freed when they close", "[admission]") {
  Admission a(AdmissionLimits{8, 8, /*max_admitted=*/2});
  for (uint64_t id = 1; id <= 3; ++id) a.Arrive(id, "10.0.0.1:1");
  CHECK(a.Admit(1));
  CHECK(a.Admit(2));
  CHECK_FALSE(a.Admit(3));  // the third is to be closed
  CHECK(a.admitted() == 2);
  a.Gone(1);
  a.Gone(3);   // already out of the books: ignored
  a.Gone(42);  // unknown: ignored
  a.Arrive(4, "10.0.0.1:2");
  CHECK(a.Admit(4));
  CHECK(a.admitted() == 2);
  CHECK(a.pending() == 0);
}

TEST_CASE("the host of an address", "[admission]") {
  CHECK(Admission::HostOf("10.0.0.1:4650") == "10.0.0.1");
  CHECK(Admission::HostOf("[fe80::1]:4650") == "fe80::1");
  CHECK(Admission::HostOf("noport") == "noport");
}

}  // namespace
}  // namespace lifeboat::agent
