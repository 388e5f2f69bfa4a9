// A consumer's first program: one RESTART (no noise) of a rank-1 LoRA module.
// Exits 0 only when K = 1 and the factors, already rank 1, come back unchanged.
#include <aclora/backends/eigen.hpp>
#include <cstdio>

int main() {
  const Eigen::VectorXf direction = Eigen::VectorXf::LinSpaced(8, 1.0f, 2.0f);
  Eigen::MatrixXf down = direction * Eigen::RowVectorXf::LinSpaced(32, -1.0f, 1.0f);
  Eigen::MatrixXf up = Eigen::VectorXf::LinSpaced(24, 0.5f, 3.0f) * direction.transpose();
  const Eigen::MatrixXf down_before = down, up_before = up;

  using View = aclora::backends::eigen::MatrixView;
  std::vector<aclora::Module<View>> modules;
  modules.push_back(aclora::Module<View>::lora("block.0.attn.to_q", down, up));
  aclora::Restart<aclora::backends::EigenBackend> restart({.noise = aclora::NoisePolicy::none});
  const aclora::RestartReport report = restart.at_threshold(modules, 0.9);

  const float change =
      std::max((down - down_before).cwiseAbs().maxCoeff(), (up - up_before).cwiseAbs().maxCoeff());
  std::printf("module rank K = %zu, largest change = %g\n", report.modules[0].module_rank, change);
  return report.modules[0].module_rank == 1 && change < 1e-5f ? 0 : 1;
}
