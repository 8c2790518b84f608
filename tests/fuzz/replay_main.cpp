// Runs a libFuzzer entry point without libFuzzer (any compiler): every file
// of the corpus directories, then a bounded number of deterministic
// mutations of each (bit flips, byte writes, truncations, insertions,
// splices). ctest runs this so the fuzz targets are exercised with gcc too.
//   <target>_replay [--mutations N] DIR...
#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::vector<uint8_t>> LoadCorpus(const std::string& dir) {
  std::vector<std::vector<uint8_t>> out;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    std::fprintf(stderr, "cannot open corpus %s\n", dir.c_str());
    std::exit(66);
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::ifstream f(dir + "/" + n, std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return out;
}

std::vector<uint8_t> Mutate(std::mt19937_64& rng, std::vector<uint8_t> in,
                            const std::vector<std::vector<uint8_t>>& corpus) {
  int steps = 1 + static_cast<int>(rng() % 4);
  for (int s = 0; s < steps; ++s) {
    switch (rng() % 6) {
      case 0:
        if (!in.empty()) in[rng() % in.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:
        if (!in.empty()) in[rng() % in.size()] = static_cast<uint8_t>(rng());
        break;
      case 2:
        if (!in.empty()) in.resize(rng() % in.size());
        break;
      case 3:
        in.insert(in.begin() + static_cast<long>(in.empty() ? 0 : rng() % in.size()),
                  static_cast<uint8_t>(rng()));
        break;
      case 4: {  // interesting values at a random place
        static const uint8_t kVals[] = {0x00, 0xff, 0x7f, 0x80, 0x10, 0x01};
        if (!in.empty()) in[rng() % in.size()] = kVals[rng() % sizeof(kVals)];
        break;
      }
      default: {  // splice with another corpus entry
        const auto& other = corpus[rng() % corpus.size()];
        size_t cut = in.empty() ? 0 : rng() % in.size();
        size_t from = other.empty() ? 0 : rng() % other.size();
        in.resize(cut);
        in.insert(in.end(), other.begin() + static_cast<long>(from), other.end());
        break;
      }
    }
  }
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 0;
  std::vector<std::vector<uint8_t>> corpus;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mutations" && i + 1 < argc) {
      mutations = std::stol(argv[++i]);
    } else {
      auto c = LoadCorpus(a);
      corpus.insert(corpus.end(), c.begin(), c.end());
    }
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "empty corpus\n");
    return 66;
  }
  for (const auto& input : corpus) LLVMFuzzerTestOneInput(input.data(), input.size());
  std::mt19937_64 rng(12345);
  long runs = 0;
  for (const auto& input : corpus) {
    for (long m = 0; m < mutations; ++m, ++runs) {
      auto x = Mutate(rng, input, corpus);
      LLVMFuzzerTestOneInput(x.data(), x.size());
    }
  }
  std::printf("replayed %zu corpus inputs and %ld mutations\n", corpus.size(), runs);
  return 0;
}
