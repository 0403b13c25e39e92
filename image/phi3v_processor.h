// The Phi-3-vision image processor, as VLM2Vec's src/vlm_backbone/phi3_v/image_processing_phi3_v.py does it
// (itself a copy of microsoft/Phi-3.5-vision-instruct's):
//   1. HD transform: transpose a portrait image; pick the largest `scale` with scale * ceil(scale / ratio) <=
//      num_crops; resize to (int(scale*336 / ratio), scale*336) with PIL's antialiased BILINEAR (what
//      torchvision's resize does to a PIL image); pad top/bottom with white to a multiple of 336 (top gets
//      the floor half); transpose back.
//   2. ToTensor (/255) and Normalize(mean, std) in f32.
//   3. pixel_values = [global view, crops..., zero crops]: the global view is torch's bicubic interpolate of
//      the normalized HD tensor to 336x336 (align_corners=False, A=-0.75, clamped borders, no antialias);
//      the 336x336 crops follow in row-major order; zero crops pad the stack to num_crops + 1.
//   4. image_sizes = (H, W) of the HD image; num_img_tokens = (h/336 * w/336 + 1) * 144 + 1 + (h/336 + 1) * 12
//      (757 for a 1344x1344 input with 4 crops: scale 2, an HD image of 672x672, 2x2 crops).
// Bit-exact against PIL + torchvision + torch (x86 build) on the golden fixtures: the HD image byte for byte,
// pixel_values to the last bit (see tests/test_image.cpp).
// Images enter as RGB (image/image.h decodes as PIL's convert("RGB") does: alpha dropped, not composited).
// Single-threaded on purpose: the data loader runs several decode workers side by side.
#pragma once
#include <cstdint>
#include <string>

#include "image/image.h"
#include "core/tensor.h"

namespace xv {

constexpr int kPhi3VCropSize = 336;
constexpr int kPhi3VMaxCrops = 256;  // a sanity bound for configs (Phi-3.5-vision uses 4 or 16)

struct Phi3VImageConfig {
  int num_crops = 4;  // xVLM2Vec's training setting; a preprocessor_config.json without it means 1 (see below)
  float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};   // OPENAI_CLIP_MEAN
  float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};   // OPENAI_CLIP_STD
};

// Reads num_crops, image_mean and image_std from a Hugging Face preprocessor_config.json. Absent (or null)
// fields take the reference class's defaults: num_crops 1, OPENAI_CLIP_MEAN / OPENAI_CLIP_STD. A number
// for image_mean / image_std applies to all three channels, as torchvision's Normalize broadcasts it.
Phi3VImageConfig phi3v_image_config_from_json(const std::string& preprocessor_config_path);

struct Phi3VImageInputs {
  Tensor pixel_values;            // (num_crops+1, 3, 336, 336)
  int64_t height = 0, width = 0;  // image_sizes of the HD image (multiples of 336)
  int64_t num_img_tokens = 0;
};

Phi3VImageInputs phi3v_preprocess(const Image& img, const Phi3VImageConfig& cfg);

// The pieces, for tests and for callers that need sizes without pixels.
struct Phi3VHdSize {
  int64_t height = 0, width = 0;
};
// The HD image size for a width x height input (the reference's calc_hd_transform_size).
Phi3VHdSize phi3v_hd_size(int width, int height, int num_crops);
int64_t phi3v_num_img_tokens(int64_t hd_height, int64_t hd_width);
// HD_transform: resize and white padding, in uint8 RGB.
Image phi3v_hd_transform(const Image& img, int num_crops);
// PIL's Image.resize((out_width, out_height), filter) of an RGB image, bit for bit: Resample.c's separable
// convolution (triangle filter for BILINEAR, Keys' cubic a = -0.5 for BICUBIC) with support scaled by the
// downscale factor, coefficients in 22-bit fixed point, horizontal pass then vertical pass, each rounded
// and clipped to uint8. A pass whose size does not change is skipped, as Pillow does.
// BILINEAR is what the HD transform uses; BICUBIC is Image.resize's default filter (the reference data
// pipeline's `image.resize((1344, 1344))` before the processor).
enum class PilFilter { kBilinear, kBicubic };
Image pil_resize(const Image& img, int out_width, int out_height, PilFilter filter);

}  // namespace xv
