// Test-only image encoders (see image_encoders.h).
#include "image_encoders.h"

#include <png.h>
#include <cstdio>
#include <jpeglib.h>
#include <gif_lib.h>
#include <webp/encode.h>

#include <stdexcept>

namespace quatre::vision::test {
namespace {

void png_write(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}
void png_flush(png_structp) {}

int gif_write(GifFileType* gif, const GifByteType* data, int n) {
  static_cast<std::string*>(gif->UserData)->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  return n;
}

}  // namespace

std::string encode_png(int width, int height, int channels, int bit_depth, const std::vector<uint8_t>& samples) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("encode_png failed");
  }
  png_set_write_fn(png, &out, png_write, png_flush);
  const int type = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), bit_depth, type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t row_bytes = static_cast<size_t>(width * channels * bit_depth / 8);
  for (int y = 0; y < height; ++y) png_write_row(png, samples.data() + static_cast<size_t>(y) * row_bytes);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::string encode_jpeg(int width, int height, int channels, const std::vector<uint8_t>& samples, int quality) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buffer, &size);
  c.image_width = static_cast<JDIMENSION>(width);
  c.image_height = static_cast<JDIMENSION>(height);
  c.input_components = channels;
  c.in_color_space = channels == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(samples.data() + static_cast<size_t>(c.next_scanline) * width * channels);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  free(buffer);  // NOLINT: allocated by libjpeg with malloc
  return out;
}

std::string encode_gif(int width, int height, const std::vector<std::array<uint8_t, 3>>& palette,
                       const std::vector<std::vector<uint8_t>>& frames, int transparent) {
  std::string out;
  int err = 0;
  GifFileType* gif = EGifOpen(&out, gif_write, &err);
  std::vector<GifColorType> colours;
  for (const auto& p : palette) colours.push_back({p[0], p[1], p[2]});
  ColorMapObject* map = GifMakeMapObject(static_cast<int>(colours.size()), colours.data());
  EGifSetGifVersion(gif, true);
  EGifPutScreenDesc(gif, width, height, 8, 0, map);
  for (size_t f = 0; f < frames.size(); ++f) {
    if (f == 0 && transparent >= 0) {
      const GifByteType gce[4] = {1, 0, 0, static_cast<GifByteType>(transparent)};
      EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, 4, gce);
    }
    EGifPutImageDesc(gif, 0, 0, width, height, false, nullptr);
    for (int y = 0; y < height; ++y) {
      EGifPutLine(gif, const_cast<GifPixelType*>(frames[f].data() + static_cast<size_t>(y * width)), width);
    }
  }
  EGifCloseFile(gif, &err);
  GifFreeMapObject(map);
  return out;
}

std::string encode_webp_lossless(int width, int height, const std::vector<uint8_t>& rgba) {
  uint8_t* data = nullptr;
  const size_t n = WebPEncodeLosslessRGBA(rgba.data(), width, height, width * 4, &data);
  std::string out(reinterpret_cast<const char*>(data), n);
  WebPFree(data);
  return out;
}

}  // namespace quatre::vision::test
