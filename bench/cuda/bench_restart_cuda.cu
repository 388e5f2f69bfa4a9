// Whole-model RESTART of the SDXL UNet LoRA (bench/common/sdxl_shapes.hpp) with aclora's
// CUDA backend, against the per-matrix peer a CUDA user would run instead: cuSOLVER gesvdj
// (economy SVD with vectors) on each factor, one after the other. Times come from CUDA
// events. Prints seconds per RESTART, matrices per second, effective GB/s (one read + one
// write of every factor), its ratio to the H200's 4.8 TB/s and to the copy bandwidth
// measured here, and the speed-up over the peer measured in the same run.
//
// Usage: bench_restart_cuda [--ranks=16,64,128] [--dtypes=fp32,bf16]
//        [--precisions=automatic,fp32,tf32] [--attention_only] [--iterations=20]
//        [--peer_stride=1] [--benchmark_out=results.json --benchmark_out_format=json]
//        [other Google Benchmark flags]
// --peer_stride=S times gesvdj on every S-th factor only and scales the time by
// (all parameters / timed parameters); the output says so when S > 1. Every storage type is
// timed at every precision setting (aclora::Precision; automatic is what this GPU resolves
// it to, printed beside it).
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/backends/cuda.cuh"
#include "sdxl_shapes.hpp"

namespace {

namespace cu = aclora::backends::cuda;
using aclora::backends::CudaBackend;
using Module = aclora::Module<cu::DeviceMatrix>;

constexpr double kThreshold = 0.9;         // energy threshold p of every RESTART here
constexpr double kH200Bandwidth = 4.8e12;  // bytes per second

struct Settings {
  std::vector<std::int64_t> ranks{16, 64, 128};
  std::vector<cu::DType> dtypes{cu::DType::f32, cu::DType::bf16};
  std::vector<aclora::Precision> precisions{aclora::Precision::automatic, aclora::Precision::fp32,
                                            aclora::Precision::tf32};
  bool attention_only = false;
  int iterations = 20;
  std::int64_t peer_stride = 1;
};

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_restart_cuda: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}
void check(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS) {
    std::fprintf(stderr, "bench_restart_cuda: %s failed (status %d)\n", what,
                 static_cast<int>(status));
    std::exit(1);
  }
}

// Stores `value` at `offset` of `data` as `dtype` (rounded to nearest even).
__device__ void store(void* data, std::int32_t dtype, std::int64_t offset, float value) {
  switch (static_cast<cu::DType>(dtype)) {
    case cu::DType::f16:
      static_cast<__half*>(data)[offset] = __float2half_rn(value);
      break;
    case cu::DType::bf16:
      static_cast<__nv_bfloat16*>(data)[offset] = __float2bfloat16_rn(value);
      break;
    case cu::DType::f64:
      static_cast<double*>(data)[offset] = value;
      break;
    default:
      static_cast<float*>(data)[offset] = value;
  }
}

// Factor (r, c) of the rank-major view = (0.8^r + 0.02) * N(0, 1): a decaying spectrum with
// a floor, deterministic per factor.
__global__ void fill_factor(void* data, std::int32_t dtype, std::int64_t rank, std::int64_t length,
                            std::int64_t rank_stride, std::int64_t length_stride,
                            aclora::NoiseKey key) {
  const std::int64_t count = rank * length;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = e / length;
    const std::int64_t c = e % length;
    const float scale = powf(0.8f, static_cast<float>(r)) + 0.02f;
    const float value = scale * aclora::gaussian_at<float>(key, static_cast<std::uint64_t>(e));
    store(data, dtype, r * rank_stride + c * length_stride, value);
  }
}

// One SDXL LoRA in device memory: row-major down (R x in) and up (out x R) per module.
struct Workload {
  std::int64_t rank = 0;
  cu::DType dtype = cu::DType::f32;
  std::shared_ptr<void> memory;
  std::vector<Module> modules;
  std::size_t parameters = 0;
  std::size_t matrices = 0;

  std::size_t bytes_moved() const { return 2 * parameters * cu::dtype_bytes(dtype); }
};

Workload make_workload(std::int64_t rank, cu::DType dtype, bool attention_only) {
  Workload w;
  w.rank = rank;
  w.dtype = dtype;
  const auto families = aclora::workload::sdxl_unet_linears(attention_only);
  w.parameters = aclora::workload::parameters_per_rank(families) * static_cast<std::size_t>(rank);
  void* memory = nullptr;
  check(cudaMalloc(&memory, w.parameters * cu::dtype_bytes(dtype)), "cudaMalloc (workload)");
  w.memory = std::shared_ptr<void>(memory, [](void* p) { cudaFree(p); });
  auto* cursor = static_cast<unsigned char*>(memory);
  std::uint64_t layer = 0;
  auto factor = [&](std::int64_t rows, std::int64_t cols, aclora::RankAxis axis) {
    const cu::DeviceMatrix m(cursor, dtype, rows, cols, cols, 1);
    cursor += static_cast<std::size_t>(rows * cols) * cu::dtype_bytes(dtype);
    const cu::RankMajorView v = cu::rank_major_view(rows, cols, cols, 1, axis);
    fill_factor<<<1024, 256>>>(m.data(), static_cast<std::int32_t>(dtype), v.rank, v.length,
                               v.rank_stride, v.length_stride, aclora::NoiseKey{2024, layer++});
    ++w.matrices;
    return m;
  };
  for (const auto& family : families) {
    for (std::size_t i = 0; i < family.count; ++i) {
      const auto in = static_cast<std::int64_t>(family.in_features);
      const auto out = static_cast<std::int64_t>(family.out_features);
      const cu::DeviceMatrix down = factor(rank, in, aclora::RankAxis::rows);
      const cu::DeviceMatrix up = factor(out, rank, aclora::RankAxis::cols);
      w.modules.push_back(Module::lora(family.group + "." + std::to_string(i), down, up));
    }
  }
  check(cudaGetLastError(), "fill_factor");
  check(cudaDeviceSynchronize(), "workload fill");
  return w;
}

// Keeps one workload alive at a time (the largest takes 1.4 GB).
Workload& workload(std::int64_t rank, cu::DType dtype, bool attention_only) {
  static std::unique_ptr<Workload> current;
  if (!current || current->rank != rank || current->dtype != dtype) {
    current.reset();
    current = std::make_unique<Workload>(make_workload(rank, dtype, attention_only));
  }
  return *current;
}

struct EventTimer {
  cudaEvent_t start{}, stop{};
  EventTimer() {
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  void begin() { check(cudaEventRecord(start), "cudaEventRecord"); }
  double seconds() {
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms * 1e-3;
  }
};

// Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB.
double measure_copy_bandwidth() {
  const std::size_t bytes = std::size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 0, bytes), "cudaMemset");
  check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy");
  EventTimer timer;
  timer.begin();
  const int repeats = 5;
  for (int i = 0; i < repeats; ++i)
    check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
  const double seconds = timer.seconds();
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) * repeats / seconds;
}

struct Results {
  double copy_bandwidth = 0.0;
  std::map<std::int64_t, double> peer_seconds;  // per rank
  std::vector<std::string> lines;
};
Results& results() {
  static Results r;
  return r;
}

std::string dtype_label(cu::DType dtype) {
  return cu::dtype_name(dtype);
}

// "fp32", or "automatic=fp64" with what this device resolves automatic to.
std::string precision_label(aclora::Precision precision) {
  std::string label = aclora::precision_name(precision);
  if (precision == aclora::Precision::automatic)
    label += std::string("=") + aclora::precision_name(cu::device_precision(precision));
  return label;
}

// The peer: cuSOLVER gesvdj per factor (fp32), on a copy (gesvdj overwrites its input).
void bench_peer(benchmark::State& state, std::int64_t rank, bool attention_only,
                std::int64_t stride) {
  Workload& w = workload(rank, cu::DType::f32, attention_only);
  cusolverDnHandle_t handle = nullptr;
  gesvdjInfo_t params = nullptr;
  check(cusolverDnCreate(&handle), "cusolverDnCreate");
  check(cusolverDnCreateGesvdjInfo(&params), "cusolverDnCreateGesvdjInfo");
  // Column-major view of each row-major factor: (cols x rows), lda = cols.
  struct Job {
    const cu::DeviceMatrix* m;
    int rows_cm, cols_cm;
  };
  std::vector<Job> jobs;
  std::size_t timed_parameters = 0, largest = 0;
  std::map<std::pair<int, int>, int> lwork;
  std::int64_t index = 0;
  for (const Module& module : w.modules) {
    for (const auto& layer : module.layers) {
      if (index++ % stride != 0)
        continue;
      const cu::DeviceMatrix& m = layer.matrix;
      Job job{&m, static_cast<int>(m.cols()), static_cast<int>(m.rows())};
      jobs.push_back(job);
      timed_parameters += static_cast<std::size_t>(m.rows() * m.cols());
      largest = std::max(largest, static_cast<std::size_t>(m.rows() * m.cols()));
      lwork.emplace(std::make_pair(job.rows_cm, job.cols_cm), 0);
    }
  }
  float *copy = nullptr, *s = nullptr, *u = nullptr, *v = nullptr, *work = nullptr;
  int* info = nullptr;
  const std::size_t k_max = static_cast<std::size_t>(rank);
  std::size_t u_max = 0, v_max = 0;
  for (const Job& job : jobs) {
    const std::size_t k = std::min(job.rows_cm, job.cols_cm);
    u_max = std::max(u_max, static_cast<std::size_t>(job.rows_cm) * k);
    v_max = std::max(v_max, static_cast<std::size_t>(job.cols_cm) * k);
  }
  check(cudaMalloc(&copy, largest * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&s, k_max * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&u, u_max * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&v, v_max * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&info, sizeof(int)), "cudaMalloc");
  int work_max = 0;
  for (auto& [shape, size] : lwork) {
    const auto [m, n] = shape;
    const int k = std::min(m, n);
    check(cusolverDnSgesvdj_bufferSize(handle, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, copy, m, s, u, m,
                                       v, n, &size, params),
          "cusolverDnSgesvdj_bufferSize");
    (void)k;
    work_max = std::max(work_max, size);
  }
  check(cudaMalloc(&work, static_cast<std::size_t>(work_max) * sizeof(float)), "cudaMalloc");
  EventTimer timer;
  double total = 0.0;
  for (auto _ : state) {
    timer.begin();
    for (const Job& job : jobs) {
      const int m = job.rows_cm, n = job.cols_cm;
      check(cudaMemcpyAsync(copy, job.m->data(), static_cast<std::size_t>(m) * n * sizeof(float),
                            cudaMemcpyDeviceToDevice),
            "cudaMemcpyAsync");
      check(cusolverDnSgesvdj(handle, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, copy, m, s, u, m, v, n,
                              work, work_max, info, params),
            "cusolverDnSgesvdj");
    }
    const double seconds =
        timer.seconds() * static_cast<double>(w.parameters) / static_cast<double>(timed_parameters);
    state.SetIterationTime(seconds);
    total += seconds;
  }
  const double per_restart = total / static_cast<double>(state.iterations());
  results().peer_seconds[rank] = per_restart;
  state.counters["seconds_per_model"] = per_restart;
  state.counters["matrices_per_s"] = static_cast<double>(w.matrices) / per_restart;
  state.counters["timed_fraction"] =
      static_cast<double>(timed_parameters) / static_cast<double>(w.parameters);
  char line[256];
  std::snprintf(line, sizeof line, "r=%-4lld gesvdj per matrix (fp32)%s: %10.3f ms per model",
                static_cast<long long>(rank), stride > 1 ? " [scaled from a subset]" : "",
                per_restart * 1e3);
  results().lines.push_back(line);
  cudaFree(copy);
  cudaFree(s);
  cudaFree(u);
  cudaFree(v);
  cudaFree(work);
  cudaFree(info);
  cusolverDnDestroyGesvdjInfo(params);
  cusolverDnDestroy(handle);
}

void bench_restart(benchmark::State& state, std::int64_t rank, cu::DType dtype, bool attention_only,
                   aclora::Precision precision) {
  Workload& w = workload(rank, dtype, attention_only);
  CudaBackend::Options options;
  options.precision = precision;
  aclora::Restart<CudaBackend> restart({.seed = 7}, CudaBackend(options));
  (void)restart.at_threshold(w.modules, kThreshold);  // plan, allocate, warm up
  EventTimer timer;
  double total = 0.0;
  std::size_t kept = 0;
  for (auto _ : state) {
    timer.begin();
    const aclora::RestartReport report = restart.at_threshold(w.modules, kThreshold);
    const double seconds = timer.seconds();
    state.SetIterationTime(seconds);
    total += seconds;
    kept = report.total_module_rank();
  }
  const double per_restart = total / static_cast<double>(state.iterations());
  const double bandwidth = static_cast<double>(w.bytes_moved()) / per_restart;
  state.counters["seconds_per_model"] = per_restart;
  state.counters["matrices_per_s"] = static_cast<double>(w.matrices) / per_restart;
  state.counters["GB_per_s"] = bandwidth * 1e-9;
  state.counters["of_4.8TB_per_s"] = bandwidth / kH200Bandwidth;
  state.counters["of_copy_bw"] = bandwidth / results().copy_bandwidth;
  state.counters["mean_K"] = static_cast<double>(kept) / static_cast<double>(w.modules.size());
  state.counters["workspace_MB"] = static_cast<double>(restart.backend().workspace_bytes([&] {
                                     std::vector<aclora::Layer<cu::DeviceMatrix>> layers;
                                     for (const Module& m : w.modules)
                                       for (const auto& l : m.layers)
                                         layers.push_back(l);
                                     return layers;
                                   }())) *
                                   1e-6;
  const auto peer = results().peer_seconds.find(rank);
  double speedup = 0.0;
  if (peer != results().peer_seconds.end()) {
    speedup = peer->second / per_restart;
    state.counters["speedup_vs_gesvdj"] = speedup;
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "r=%-4lld aclora CUDA (%s): %10.3f ms per model, %8.1f GB/s, %5.3f of 4.8 TB/s, "
                "%5.3f of copy, %8.1fx vs gesvdj",
                static_cast<long long>(rank),
                (dtype_label(dtype) + ", " + precision_label(precision)).c_str(), per_restart * 1e3,
                bandwidth * 1e-9, bandwidth / kH200Bandwidth, bandwidth / results().copy_bandwidth,
                speedup);
  results().lines.push_back(line);
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');)
    if (!part.empty())
      parts.push_back(part);
  return parts;
}

// Takes our flags out of argv; the rest goes to Google Benchmark.
Settings parse(int& argc, char** argv) {
  Settings s;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> const char* {
      return arg.rfind(name + "=", 0) == 0 ? argv[i] + name.size() + 1 : nullptr;
    };
    if (const char* v = value("--ranks")) {
      s.ranks.clear();
      for (const auto& r : split(v))
        s.ranks.push_back(std::stoll(r));
    } else if (const char* v = value("--dtypes")) {
      s.dtypes.clear();
      for (const auto& d : split(v)) {
        if (d == "fp32")
          s.dtypes.push_back(cu::DType::f32);
        else if (d == "fp16")
          s.dtypes.push_back(cu::DType::f16);
        else if (d == "bf16")
          s.dtypes.push_back(cu::DType::bf16);
        else if (d == "fp64")
          s.dtypes.push_back(cu::DType::f64);
        else {
          std::fprintf(stderr, "unknown dtype %s (fp64, fp32, fp16, bf16)\n", d.c_str());
          std::exit(2);
        }
      }
    } else if (const char* v = value("--precisions")) {
      s.precisions.clear();
      for (const auto& p : split(v)) {
        if (p == "automatic")
          s.precisions.push_back(aclora::Precision::automatic);
        else if (p == "fp64")
          s.precisions.push_back(aclora::Precision::fp64);
        else if (p == "fp32")
          s.precisions.push_back(aclora::Precision::fp32);
        else if (p == "tf32")
          s.precisions.push_back(aclora::Precision::tf32);
        else {
          std::fprintf(stderr, "unknown precision %s (automatic, fp64, fp32, tf32)\n", p.c_str());
          std::exit(2);
        }
      }
    } else if (arg == "--attention_only") {
      s.attention_only = true;
    } else if (const char* v = value("--iterations")) {
      s.iterations = std::max(1, std::stoi(v));
    } else if (const char* v = value("--peer_stride")) {
      s.peer_stride = std::max<std::int64_t>(1, std::stoll(v));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const Settings settings = parse(argc, argv);
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("bench_restart_cuda: no CUDA device (%s); nothing to measure.\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return 0;
  }
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, 0), "cudaGetDeviceProperties");
  results().copy_bandwidth = measure_copy_bandwidth();
  std::printf("device: %s; copy bandwidth %.0f GB/s (%.3f of 4.8 TB/s)\n", properties.name,
              results().copy_bandwidth * 1e-9, results().copy_bandwidth / kH200Bandwidth);

  for (std::int64_t rank : settings.ranks) {
    const std::string r = std::to_string(rank);
    benchmark::RegisterBenchmark(("peer_gesvdj_per_matrix/r:" + r + "/fp32").c_str(),
                                 [=](benchmark::State& state) {
                                   bench_peer(state, rank, settings.attention_only,
                                              settings.peer_stride);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
    for (cu::DType dtype : settings.dtypes) {
      for (aclora::Precision precision : settings.precisions) {
        benchmark::RegisterBenchmark(("aclora_cuda_restart/r:" + r + "/" + dtype_label(dtype) +
                                      "/" + aclora::precision_name(precision))
                                         .c_str(),
                                     [=](benchmark::State& state) {
                                       bench_restart(state, rank, dtype, settings.attention_only,
                                                     precision);
                                     })
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(settings.iterations);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("\nSDXL UNet LoRA (%s), threshold p = %.2f:\n",
              settings.attention_only ? "attention only" : "all linears", kThreshold);
  for (const std::string& line : results().lines)
    std::printf("  %s\n", line.c_str());
  return 0;
}
