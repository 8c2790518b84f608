// libFuzzer target: the frame decoder and every payload decoder, as a server
// or puller would run them on bytes from the network. Must never crash,
// hang, or allocate beyond the limits; errors are fine.
#include <cstddef>
#include <cstdint>

#include "syncproto/frame.h"
#include "syncproto/manifest_codec.h"

using namespace lifeboat::syncproto;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FrameDecoder decoder;
  // Deliver in two pieces to exercise partial headers/payloads.
  size_t split = size ? data[0] % (size + 1) : 0;
  decoder.Append(std::span<const uint8_t>(data, split));
  for (int round = 0; round < 2; ++round) {
    for (;;) {
      auto next = decoder.Next();
      if (!next.ok() || !next->has_value()) break;
      const Frame& f = **next;
      switch (f.type) {
        case FrameType::kHello: {
          HelloMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kAuth: {
          AuthMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kError: {
          ErrorMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kManifestRequest: {
          ManifestRequestMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kManifestData: {
          ManifestDecompressor d(16u << 20);
          if (d.Feed(f.payload).ok()) {
            auto raw = d.End();
            if (raw.ok()) DecodeManifestAnswer(*raw).status().IgnoreError();
          }
          break;
        }
        case FrameType::kFileRequest: {
          FileRequestMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kFileStart: {
          FileStartMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        case FrameType::kFileEnd: {
          FileEndMsg m;
          DecodePayload(f.payload, &m).IgnoreError();
          break;
        }
        default:
          break;
      }
    }
    if (round == 0) decoder.Append(std::span<const uint8_t>(data + split, size - split));
  }
  decoder.Finish().IgnoreError();
  return 0;
}
