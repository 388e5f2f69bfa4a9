// aclora-sdxl train: options, their checks, the run and its summary.
#include "train_command.hpp"

#include <torch/cuda.h>

#include <c10/util/Exception.h>

#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "aclora_cli.hpp"

namespace sdxl_app {
namespace {

namespace cli = aclora::cli;

// "N" or "W,H" (sd-scripts' --resolution).
void apply_resolution(const std::string& text, sdxl::BucketOptions& buckets) {
  const auto comma = text.find(',');
  if (comma == std::string::npos) {
    buckets.resolution_width = buckets.resolution_height =
        cli::parse_whole<int64_t>("--resolution", text, 8);
    return;
  }
  buckets.resolution_width =
      cli::parse_whole<int64_t>("--resolution (width)", text.substr(0, comma), 8);
  buckets.resolution_height =
      cli::parse_whole<int64_t>("--resolution (height)", text.substr(comma + 1), 8);
}

}  // namespace

CLI::App* add_train_command(CLI::App& app, TrainArguments& args) {
  sdxl::TrainOptions& o = args.options;
  o.data_defaults.subsets.resize(1);  // the subset defaults of folders and TOML files
  sdxl::SubsetConfig& subset = o.data_defaults.subsets[0];
  sdxl::BucketOptions& buckets = o.data_defaults.buckets;

  CLI::App* train = app.add_subcommand(
      "train", "train an SDXL LoRA whose rank per module AC-LoRA chooses (or a fixed rank)");
  const auto group = [&](CLI::Option* option, const char* name) { return option->group(name); };

  // Model and data.
  const char* model_group = "Model and data";
  group(train
            ->add_option("--model", o.model,
                         "diffusers folder or single-file .safetensors SDXL checkpoint")
            ->type_name("PATH")
            ->required(),
        model_group);
  group(train
            ->add_option("--config", o.config_folder,
                         "diffusers folder whose config.json files describe a single-file model")
            ->type_name("DIR"),
        model_group);
  group(train
            ->add_option("--tokenizer", o.tokenizer,
                         "tokenizer folder or bpe_simple_vocab_16e6.txt.gz (as for sample)")
            ->type_name("PATH"),
        model_group);
  group(train
            ->add_option("--data", o.data,
                         "images with same-stem .txt captions; sub-folders N_name repeat N "
                         "times (sd-scripts' layout)")
            ->type_name("DIR"),
        model_group);
  group(train
            ->add_option("--dataset-config", o.dataset_config,
                         "sd-scripts dataset TOML ([general], [[datasets]], "
                         "[[datasets.subsets]]) instead of --data")
            ->type_name("FILE"),
        model_group);
  group(train
            ->add_option("-o,--output", o.output,
                         "run folder: LoRA files, metrics.jsonl, TensorBoard events, states, "
                         "samples, ranks.png")
            ->type_name("DIR")
            ->required(),
        model_group);
  group(train
            ->add_option("--cache-dir", o.cache_dir,
                         "latent and text-encoder caches (default OUTPUT/cache; reused by "
                         "later runs)")
            ->type_name("DIR"),
        model_group);
  group(train
            ->add_option("--caption-missing", args.caption_missing,
                         "images without a caption file: error (default) or empty")
            ->type_name("WHAT")
            ->check(CLI::IsMember({"error", "empty"})),
        model_group);
  group(train
            ->add_option("--caption-extension", subset.caption_extension,
                         "caption file extension (default .txt)")
            ->type_name("EXT"),
        model_group);
  group(train
            ->add_option("--validation-dir", o.validation_dir,
                         "held-out images for the validation loss")
            ->type_name("DIR"),
        model_group);
  group(cli::add_real(*train, "--validation-split", o.validation_split,
                      "share of the images held out for validation, chosen by file name and "
                      "seed (default 0)"),
        model_group);

  // Buckets and captions (defaults for every subset; a TOML file overrides them).
  const char* data_group = "Buckets and captions";
  group(train
            ->add_option("--resolution", args.resolution,
                         "training resolution N or W,H; buckets hold W x H pixels (default 1024)")
            ->type_name("N|W,H"),
        data_group);
  group(train->add_flag("--no-bucket", args.no_bucket,
                        "no aspect-ratio buckets: every image is resized and cropped to the "
                        "resolution"),
        data_group);
  group(cli::add_whole(*train, "--min-bucket-reso", buckets.min_bucket_reso,
                       "smallest bucket side (default 256)", 8),
        data_group);
  group(cli::add_whole(*train, "--max-bucket-reso", buckets.max_bucket_reso,
                       "largest bucket side (default 2048)", 8),
        data_group);
  group(cli::add_whole(*train, "--bucket-reso-steps", buckets.bucket_reso_steps,
                       "bucket sides are multiples of this (default 64)", 8),
        data_group);
  group(train->add_flag("--bucket-no-upscale", buckets.bucket_no_upscale,
                        "per-image buckets; images are never enlarged"),
        data_group);
  group(cli::add_whole(*train, "--batch-size", o.data_defaults.batch_size,
                       "images per batch, one bucket per batch (default 1)", 1),
        data_group);
  group(train->add_flag("--shuffle-caption", subset.shuffle_caption,
                        "shuffle the comma-separated tags of each caption"),
        data_group);
  group(cli::add_whole(*train, "--keep-tokens", subset.keep_tokens,
                       "leading tags that --shuffle-caption leaves in place (default 0)"),
        data_group);
  group(cli::add_real(*train, "--caption-dropout-rate", subset.caption_dropout_rate,
                      "probability of training a sample with the empty caption (default 0)"),
        data_group);

  // The LoRA and AC-LoRA.
  const char* lora_group = "LoRA and AC-LoRA";
  group(train
            ->add_option("--targets", args.targets,
                         "UNet modules: attn (560), linear (722, kohya's default) or "
                         "linear+conv (with 3x3 convolutions)")
            ->type_name("SET")
            ->check(CLI::IsMember(sdxl::names_of<sdxl::UnetTargets>())),
        lora_group);
  group(cli::add_whole(*train, "--rank", o.rank,
                       "R: the largest rank; AC-LoRA chooses K <= R per module (default 64)", 1),
        lora_group);
  group(cli::add_real(*train, "--alpha", o.alpha,
                      "kohya alpha, scale alpha / R (default: alpha = R, scale 1)"),
        lora_group);
  group(cli::add_whole(*train, "--conv-rank", o.conv_rank,
                       "rank of the 3x3 convolution LoRAs with linear+conv (default: --rank)"),
        lora_group);
  group(cli::add_real(*train, "--dropout", o.dropout, "LoRA dropout (default 0)"), lora_group);
  group(train->add_flag("--train-text-encoder", o.train_text_encoder,
                        "LoRAs on both text encoders too"),
        lora_group);
  group(cli::add_whole(*train, "--restart-every", o.restart_every,
                       "E: an AC-LoRA RESTART every E epochs (default 10)", 1, 1 << 20),
        lora_group);
  group(train->add_flag("--fixed-rank", o.fixed_rank,
                        "plain LoRA at --rank: no RESTART (the baseline)"),
        lora_group);

  // Optimisation.
  const char* optim_group = "Optimisation";
  group(cli::add_whole(*train, "--epochs", o.epochs, "N (default 100)", 1, 1 << 20), optim_group);
  group(cli::add_real(*train, "--lr", o.lr, "AdamW learning rate (default 1e-4)"), optim_group);
  group(
      cli::add_real(*train, "--weight-decay", o.weight_decay, "AdamW weight decay (default 0.01)"),
      optim_group);
  group(train
            ->add_option("--lr-scheduler", args.lr_scheduler,
                         "constant (default), constant_with_warmup, linear or cosine")
            ->type_name("NAME")
            ->check(CLI::IsMember(sdxl::names_of<aclora::train::LrScheduleKind>())),
        optim_group);
  group(cli::add_whole(*train, "--lr-warmup-steps", o.lr_warmup_steps,
                       "optimizer steps of linear warmup (default 0)"),
        optim_group);
  group(cli::add_real(*train, "--max-grad-norm", o.max_grad_norm,
                      "clip the LoRA gradients' norm to this (default 1; 0: off)"),
        optim_group);
  group(cli::add_whole(*train, "--grad-accum", o.grad_accum,
                       "batches per optimizer step (default 1)", 1),
        optim_group);
  group(cli::add_whole(*train, "--seed", o.seed,
                       "everything random follows from it, 0 to 2^64-1 (default 0)", 0,
                       std::numeric_limits<uint64_t>::max(), "S"),
        optim_group);
  group(train
            ->add_option("--prediction", args.prediction,
                         "epsilon or v (default: the scheduler config's prediction_type)")
            ->type_name("T")
            ->check(CLI::IsMember({"epsilon", "v"})),
        optim_group);
  group(cli::add_real(*train, "--min-snr-gamma", o.loss.min_snr_gamma,
                      "min-SNR loss weighting gamma, 5 is common (default 0: off)"),
        optim_group);
  group(cli::add_real(*train, "--noise-offset", o.loss.noise_offset,
                      "noise offset, 0.0357 is common (default 0: off)"),
        optim_group);
  group(train
            ->add_option("--restart-loss", args.restart_loss,
                         "the loss logged and read by the RESTART (its L): weighted (default: "
                         "the loss trained on, min-SNR weighted with --min-snr-gamma) or "
                         "unweighted (the plain MSE against the epsilon or v target)")
            ->type_name("KIND")
            ->check(CLI::IsMember(sdxl::names_of<sdxl::RestartLoss>())),
        optim_group);
  group(train
            ->add_option("--mixed-precision", args.mixed_precision,
                         "no (default), bf16, or fp16 (CUDA; with loss scaling)")
            ->type_name("T")
            ->check(CLI::IsMember(sdxl::names_of<sdxl::MixedPrecision>())),
        optim_group);
  group(train->add_flag("--gradient-checkpointing", o.gradient_checkpointing,
                        "recompute UNet blocks in the backward pass (less memory)"),
        optim_group);
  group(train
            ->add_option("--device", o.device,
                         "cpu (default), cuda or cuda:N; under torchrun, cuda is the process's "
                         "LOCAL_RANK-th GPU")
            ->type_name("DEV"),
        optim_group);
  group(cli::add_real(*train, "--ddp-timeout", o.ddp_timeout_minutes,
                      "under torchrun: minutes a collective may wait for the other processes "
                      "before the run stops naming them (default 30)"),
        optim_group);

  // During and after.
  const char* output_group = "Samples, validation and files";
  group(train
            ->add_option("--sample-prompts", o.sample_prompts,
                         "prompt file, one per line with sd-scripts' --w --h --d --s --l --n")
            ->type_name("FILE"),
        output_group);
  group(cli::add_whole(*train, "--sample-every-n-epochs", o.sample_every_n_epochs,
                       "sample grids every N epochs (default 0: at the end only)"),
        output_group);
  group(cli::add_whole(*train, "--save-every-n-epochs", o.save_every_n_epochs,
                       "also write the LoRA every N epochs (default 0: the final one only)"),
        output_group);
  group(train->add_flag("--no-save-state", args.no_save_state,
                        "write no training states (then --resume has nothing to continue)"),
        output_group);
  group(train
            ->add_option("--resume", args.resume,
                         "continue a training state bit for bit: OUTPUT's newest, or the state "
                         "folder DIR (OUTPUT/state/state-*); refused when any setting that "
                         "changes the result differs (each named)")
            ->type_name("[DIR]")
            ->expected(0, 1),
        output_group);
  group(train
            ->add_option("--format", args.format,
                         "kohya (default: ComfyUI, A1111, diffusers), diffusers or peft")
            ->type_name("F")
            ->check(CLI::IsMember(sdxl::names_of<aclora::train::ExportFormat>())),
        output_group);
  group(train->add_option("--save-precision", args.save_precision, "fp16 (default), bf16 or fp32")
            ->type_name("T")
            ->check(CLI::IsMember(sdxl::names_of<sdxl::SavePrecision>())),
        output_group);
  group(train->add_flag("--no-progress", args.no_progress, "no progress bar on stderr"),
        output_group);
  train->footer(
      "AC-LoRA: every E epochs a RESTART keeps, per module, the leading singular components "
      "holding a share p = 1 - L^alpha of the energy (L: the mean of the epochs' mean training "
      "losses since the previous RESTART, see --restart-loss), truncates to them and adds noise "
      "for what was removed. The final LoRA has each module's last rank K; "
      "its metadata says ss_network_dim \"Dynamic\" and lists the ranks. Ctrl-C saves a state; "
      "--resume continues it bit for bit. Several processes: torchrun --no-python "
      "--nproc-per-node N aclora-sdxl train ... (data parallel; the global batch is N x "
      "--batch-size x --grad-accum; rank 0 writes the files).");
  return train;
}

int run_train(TrainArguments& args) {
  sdxl::TrainOptions& o = args.options;
  if (args.resolution)
    apply_resolution(*args.resolution, o.data_defaults.buckets);
  o.data_defaults.buckets.enable_bucket = !args.no_bucket;
  o.caption_missing =
      args.caption_missing == "empty" ? sdxl::MissingCaption::empty : sdxl::MissingCaption::error;
  if (!args.prediction.empty())
    o.prediction =
        args.prediction == "v" ? sdxl::PredictionTarget::v : sdxl::PredictionTarget::epsilon;
  const auto choice = [](auto& field, const std::string& name) {
    field = *sdxl::choice_named<std::decay_t<decltype(field)>>(name);  // checked by CLI11
  };
  choice(o.targets, args.targets);
  choice(o.mixed_precision, args.mixed_precision);
  choice(o.lr_scheduler, args.lr_scheduler);
  choice(o.format, args.format);
  choice(o.save_precision, args.save_precision);
  choice(o.restart_loss, args.restart_loss);
  o.resume = args.resume.has_value();
  if (args.resume && !args.resume->empty())
    o.resume_from = *args.resume;
  o.save_state = !args.no_save_state;
  o.progress = !args.no_progress;
  if (o.device.rfind("cuda", 0) == 0 && !torch::cuda::is_available())
    throw std::runtime_error("--device " + o.device + ": no CUDA device is available");

  sdxl::TrainResult result;
  try {
    result = sdxl::train(o, [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
    });
  } catch (const sdxl::TrainOptionError& error) {
    throw cli::UsageError(error.what());  // an option out of range or contradicting another
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    if (message.find("out of memory") != std::string::npos)
      throw std::runtime_error(
          message.substr(0, message.find('\n')) +
          " -- to fit: --gradient-checkpointing, --mixed-precision bf16, a smaller --batch-size "
          "(with --grad-accum to keep the batch), a lower --rank or --resolution");
    throw;
  }
  if (result.lora.empty() && !result.interrupted)
    return cli::kExitSuccess;  // a process of a multi-process run other than rank 0
  if (result.interrupted) {
    std::fprintf(stderr, "interrupted after epoch %d: state saved in %s; --resume continues\n",
                 result.epochs, o.output.c_str());
    return 130;  // the shell's code for SIGINT
  }
  std::size_t kept = 0;
  for (const std::size_t rank : result.ranks)
    kept += rank;
  std::fprintf(stderr,
               "wrote %s: %zu modules, total rank %zu (of %zu at R = %lld), %d epochs, "
               "%lld steps\n",
               result.lora.c_str(), result.modules, kept,
               result.modules * static_cast<std::size_t>(o.rank), static_cast<long long>(o.rank),
               result.epochs, static_cast<long long>(result.steps));
  return cli::kExitSuccess;
}

}  // namespace sdxl_app
