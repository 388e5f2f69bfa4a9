// Internal interface of aclora-lora: parsed options, the shared analysis, and the commands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/lora.hpp"
#include "aclora/product.hpp"
#include "aclora_cli.hpp"

namespace aclora::lora_tool {

/// Bad command-line use (exit status 2).
using UsageError = cli::UsageError;

/// Options of all commands (each command reads the ones it needs).
struct Options {
  std::string command;
  std::filesystem::path input;
  std::optional<std::filesystem::path> output;
  bool json = false;
  std::optional<std::size_t> rank;  // resize --rank
  std::optional<double> energy;     // resize --energy (fraction in (0, 1])
  std::optional<double> loss;       // --loss L
  std::optional<int> epoch;         // --epoch E (0-based)
  std::optional<int> epochs;        // --epochs N
  std::uint64_t seed = 0;           // restart --seed
  std::optional<std::string> to;    // convert/resize --to kohya|diffusers|peft
  std::string dtype = "f32";        // resize: dtype of refactored factors (f32|f16|bf16|keep)
  unsigned threads = 0;             // worker threads (0 = hardware)
  // kohya output: one alpha for all modules (diffusers reads per-module alphas wrongly).
  // Default: on, except for kohya -> kohya conversion (kept bit-exact).
  std::optional<bool> uniform_alpha;
};

/// The factors of a module as float matrices: views into the file when stored as aligned
/// F32, converted copies otherwise.
struct FloatFactors {
  std::vector<float> down_storage;
  std::vector<float> up_storage;
  const float* down = nullptr;  // rank x in, row-major
  const float* up = nullptr;    // out x rank, row-major
};

/// Loads a module's factors; throws lora::Error naming the module on NaN or Inf.
FloatFactors load_factors(const lora::LoraModule& module, const std::string& file_label);

/// Product analysis of a module (dW = B A, the stored scale not applied).
struct ModuleAnalysis {
  ProductDecomposition decomposition;
  FloatFactors factors;
};
ModuleAnalysis analyze_module(const lora::LoraModule& module, const std::string& file_label);
/// Refactors an analysed module to rank K.
ProductFactors refactor_module(const lora::LoraModule& module, const ModuleAnalysis& analysis,
                               std::size_t kept);

/// Runs `task(i)` for i in [0, count) on `threads` workers, printing a progress line on `err`
/// when the run takes longer than a second.
void for_each_module(std::size_t count, unsigned threads, std::ostream& err, const char* what,
                     const std::function<void(std::size_t)>& task);

/// "SDXL (...)", "SD 1.x (...)", ... or "unknown".
std::string guess_base_model(const lora::LoraFile& file);
/// True when the guess is SDXL.
bool is_sdxl(const lora::LoraFile& file);

/// The block a module belongs to, for per-block summaries ("unet input_blocks_4", "te1").
std::string block_of(const lora::LoraModule& module);

/// Opens the input (errors become lora::Error with one-line messages).
lora::LoraFile open_input(const Options& options);
/// Throws lora::Error when the output cannot be created (missing folder, not writable,
/// same as the input) before any work is done.
void check_output(const Options& options);
/// Metadata entries the output records (aclora_*), besides the format's own.
using Metadata = std::map<std::string, std::string>;

/// Writes modules in the given format ("kohya", "diffusers", "peft"), each factor stored as
/// `dtypes[i]` says and rounded to it once (scale folding included, see lora::encode_module);
/// alphas of kohya files in their module's up dtype. `metadata` is added to the file's.
void write_output(const lora::LoraFile& source, std::vector<lora::OutputModule> modules,
                  std::span<const lora::FactorDtypes> dtypes, const std::string& format,
                  const Options& options, const Metadata& metadata = {});

/// A JSON object of module name -> value, as metadata text.
std::string module_json(const std::vector<lora::OutputModule>& modules,
                        const std::function<std::size_t(std::size_t)>& value);

/// The shortest text that reads back as `value` ("0.99", "3").
std::string number_text(double value);
/// The output format: --to, or the input's (kohya for LyCORIS).
std::string output_format(const Options& options, const lora::LoraFile& file);
/// Throws when the file holds LyCORIS modules (they cannot be refactored or converted).
void refuse_lycoris(const lora::LoraFile& file, const std::string& command);
/// Warns on `err` about unknown keys that will not be written.
void warn_unknown(const lora::LoraFile& file, std::ostream& err);

int inspect(const Options& options, std::ostream& out, std::ostream& err);
int resize(const Options& options, std::ostream& out, std::ostream& err);
int restart(const Options& options, std::ostream& out, std::ostream& err);
int convert(const Options& options, std::ostream& out, std::ostream& err);

}  // namespace aclora::lora_tool
