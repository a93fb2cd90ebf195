#pragma once
// One function per scenario; each prints its rows and returns the CLI's exit code.

#include "berth/bench/bench.hpp"

namespace berth::bench {

int bench_step(const options& g, int n);
int bench_graph(const options& g, int n);
int bench_sessions(const options& g, int n);
int bench_resume(const options& g, int n);
int bench_sandbox(const options& g, int n);
int bench_workspace(const options& g, int n);
int bench_setup(const options& g, int n);
int bench_gateway(const options& g, int n);

}  // namespace berth::bench
