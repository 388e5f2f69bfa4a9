// aclora-lora convert: the same modules in another layout (kohya, diffusers, PEFT).
#include "commands.hpp"

namespace aclora::lora_tool {

int convert(const Options& options, std::ostream& out, std::ostream& err) {
  if (!options.to)
    throw UsageError("convert needs --to kohya|diffusers|peft");
  check_output(options);
  const lora::LoraFile file = open_input(options);
  refuse_lycoris(file, "converted");
  const std::string format = output_format(options, file);
  warn_unknown(file, err);
  std::vector<lora::OutputModule> written;
  std::vector<lora::FactorDtypes> dtypes;
  for (const auto& module : file.modules) {
    load_factors(module, file.path.string());  // refuses NaN / Inf factors
    written.push_back(lora::unchanged_module(module));
    dtypes.push_back(lora::factor_dtypes(written.back()));
  }
  write_output(file, std::move(written), dtypes, format, options);
  out << "converted:   " << file.modules.size() << " modules, " << lora::format_name(file.format)
      << " -> " << format << " " << options.output->string() << "\n";
  return 0;
}

}  // namespace aclora::lora_tool
