#include "viewer/gl_renderer.h"

#define GL_GLEXT_PROTOTYPES 1
#include <GL/gl.h>
#include <GL/glext.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/errors.h"

namespace streamrecon::viewer {

namespace {

// Points: confidence <= threshold moves the vertex outside the clip volume, so it is not drawn.
constexpr const char* kPointVertexShader = R"(#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 color;
layout(location = 2) in float conf;
uniform mat4 mvp;
uniform float point_size;
uniform float conf_threshold;
out vec3 v_color;
void main() {
  v_color = color;
  if (conf <= conf_threshold) {
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    gl_PointSize = 1.0;
    return;
  }
  gl_Position = mvp * vec4(position, 1.0);
  gl_PointSize = point_size;
}
)";

constexpr const char* kLineVertexShader = R"(#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 color;
uniform mat4 mvp;
out vec3 v_color;
void main() {
  v_color = color;
  gl_Position = mvp * vec4(position, 1.0);
}
)";

constexpr const char* kColorFragmentShader = R"(#version 330 core
in vec3 v_color;
out vec4 frag_color;
void main() { frag_color = vec4(v_color, 1.0); }
)";

GLuint CompileShader(GLenum kind, const char* source) {
  const GLuint shader = glCreateShader(kind);
  glShaderSource(shader, 1, &source, nullptr);
  glCompileShader(shader);
  GLint ok = GL_FALSE;
  glGetShaderiv(shader, GL_COMPILE_STATUS, &ok);
  if (ok != GL_TRUE) {
    char log[2048] = {0};
    glGetShaderInfoLog(shader, sizeof(log), nullptr, log);
    glDeleteShader(shader);
    throw Error(std::string("viewer: expected the OpenGL 3.3 shader to compile, found: ") + log);
  }
  return shader;
}

GLuint LinkProgram(const char* vertex_source, const char* fragment_source) {
  const GLuint vs = CompileShader(GL_VERTEX_SHADER, vertex_source);
  const GLuint fs = CompileShader(GL_FRAGMENT_SHADER, fragment_source);
  const GLuint program = glCreateProgram();
  glAttachShader(program, vs);
  glAttachShader(program, fs);
  glLinkProgram(program);
  glDeleteShader(vs);
  glDeleteShader(fs);
  GLint ok = GL_FALSE;
  glGetProgramiv(program, GL_LINK_STATUS, &ok);
  if (ok != GL_TRUE) {
    char log[2048] = {0};
    glGetProgramInfoLog(program, sizeof(log), nullptr, log);
    glDeleteProgram(program);
    throw Error(std::string("viewer: expected the shader program to link, found: ") + log);
  }
  return program;
}

const void* Offset(size_t bytes) { return reinterpret_cast<const void*>(bytes); }

}  // namespace

// ---- PointBuffer -------------------------------------------------------------------------------

PointBuffer::PointBuffer() {
  program_ = LinkProgram(kPointVertexShader, kColorFragmentShader);
  mvp_location_ = glGetUniformLocation(program_, "mvp");
  size_location_ = glGetUniformLocation(program_, "point_size");
  conf_location_ = glGetUniformLocation(program_, "conf_threshold");
  glGenVertexArrays(1, &vao_);
  glGenBuffers(1, &vbo_);
  glBindVertexArray(vao_);
  glBindBuffer(GL_ARRAY_BUFFER, vbo_);
  constexpr GLsizei stride = sizeof(CloudVertex);
  glEnableVertexAttribArray(0);
  glVertexAttribPointer(0, 3, GL_FLOAT, GL_FALSE, stride, Offset(offsetof(CloudVertex, x)));
  glEnableVertexAttribArray(1);
  glVertexAttribPointer(1, 3, GL_UNSIGNED_BYTE, GL_TRUE, stride, Offset(offsetof(CloudVertex, r)));
  glEnableVertexAttribArray(2);
  glVertexAttribPointer(2, 1, GL_FLOAT, GL_FALSE, stride, Offset(offsetof(CloudVertex, conf)));
  glBindVertexArray(0);
}

PointBuffer::~PointBuffer() {
  glDeleteBuffers(1, &vbo_);
  glDeleteVertexArrays(1, &vao_);
  glDeleteProgram(program_);
}

void PointBuffer::Clear() {
  uploaded_.clear();
  count_ = 0;
}

size_t PointBuffer::Sync(const CloudSnapshot& cloud) {
  constexpr size_t kChunkBytes = CloudChunk::kCapacity * sizeof(CloudVertex);
  const size_t needed = cloud.chunks.size() * CloudChunk::kCapacity;
  glBindBuffer(GL_ARRAY_BUFFER, vbo_);
  if (needed > capacity_) {
    // Grow geometrically so a growing cloud reallocates rarely; everything is uploaded again.
    capacity_ = std::max(needed, capacity_ * 2);
    glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(capacity_ * sizeof(CloudVertex)), nullptr,
                 GL_DYNAMIC_DRAW);
    uploaded_.clear();
  }
  uploaded_.resize(cloud.chunks.size(), 0);
  size_t bytes = 0;
  for (size_t c = 0; c < cloud.chunks.size(); ++c) {
    const CloudChunk& chunk = *cloud.chunks[c];
    if (uploaded_[c] == chunk.id) continue;
    const size_t size = chunk.vertices.size() * sizeof(CloudVertex);
    glBufferSubData(GL_ARRAY_BUFFER, static_cast<GLintptr>(c * kChunkBytes), static_cast<GLsizeiptr>(size),
                    chunk.vertices.data());
    uploaded_[c] = chunk.id;
    bytes += size;
  }
  glBindBuffer(GL_ARRAY_BUFFER, 0);
  count_ = cloud.points;
  return bytes;
}

void PointBuffer::Draw(const Mat4& mvp, float point_size, float conf_threshold) const {
  if (count_ == 0) return;
  glUseProgram(program_);
  glUniformMatrix4fv(mvp_location_, 1, GL_FALSE, mvp.data());
  glUniform1f(size_location_, point_size);
  glUniform1f(conf_location_, conf_threshold);
  glBindVertexArray(vao_);
  glDrawArrays(GL_POINTS, 0, static_cast<GLsizei>(count_));
  glBindVertexArray(0);
  glUseProgram(0);
}

// ---- LineBuffer --------------------------------------------------------------------------------

LineBuffer::LineBuffer() {
  program_ = LinkProgram(kLineVertexShader, kColorFragmentShader);
  mvp_location_ = glGetUniformLocation(program_, "mvp");
  glGenVertexArrays(1, &vao_);
  glGenBuffers(1, &vbo_);
  glBindVertexArray(vao_);
  glBindBuffer(GL_ARRAY_BUFFER, vbo_);
  constexpr GLsizei stride = sizeof(LineVertex);
  glEnableVertexAttribArray(0);
  glVertexAttribPointer(0, 3, GL_FLOAT, GL_FALSE, stride, Offset(offsetof(LineVertex, x)));
  glEnableVertexAttribArray(1);
  glVertexAttribPointer(1, 3, GL_FLOAT, GL_FALSE, stride, Offset(offsetof(LineVertex, r)));
  glBindVertexArray(0);
}

LineBuffer::~LineBuffer() {
  glDeleteBuffers(1, &vbo_);
  glDeleteVertexArrays(1, &vao_);
  glDeleteProgram(program_);
}

void LineBuffer::Set(const std::vector<LineVertex>& segments) {
  glBindBuffer(GL_ARRAY_BUFFER, vbo_);
  glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(segments.size() * sizeof(LineVertex)),
               segments.data(), GL_DYNAMIC_DRAW);
  glBindBuffer(GL_ARRAY_BUFFER, 0);
  count_ = segments.size();
}

void LineBuffer::Draw(const Mat4& mvp) const {
  if (count_ == 0) return;
  glUseProgram(program_);
  glUniformMatrix4fv(mvp_location_, 1, GL_FALSE, mvp.data());
  glBindVertexArray(vao_);
  glDrawArrays(GL_LINES, 0, static_cast<GLsizei>(count_));
  glBindVertexArray(0);
  glUseProgram(0);
}

// ---- Texture -----------------------------------------------------------------------------------

Texture::Texture() {
  glGenTextures(1, &id_);
  glBindTexture(GL_TEXTURE_2D, id_);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_LINEAR);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
  glBindTexture(GL_TEXTURE_2D, 0);
}

Texture::~Texture() { glDeleteTextures(1, &id_); }

void Texture::Update(const RgbImage& image) {
  if (image.empty()) return;
  glBindTexture(GL_TEXTURE_2D, id_);
  glPixelStorei(GL_UNPACK_ALIGNMENT, 1);
  glTexImage2D(GL_TEXTURE_2D, 0, GL_RGB8, image.width, image.height, 0, GL_RGB, GL_UNSIGNED_BYTE,
               image.data.data());
  glBindTexture(GL_TEXTURE_2D, 0);
  width_ = image.width;
  height_ = image.height;
}

// ---- helpers -----------------------------------------------------------------------------------

RgbImage ReadFramebuffer(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.data.resize(static_cast<size_t>(width) * height * 3);
  std::vector<uint8_t> bottom_up(image.data.size());
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  glReadPixels(0, 0, width, height, GL_RGB, GL_UNSIGNED_BYTE, bottom_up.data());
  const size_t row = static_cast<size_t>(width) * 3;
  for (int y = 0; y < height; ++y) {
    std::copy_n(bottom_up.data() + (height - 1 - y) * row, row, image.data.data() + y * row);
  }
  return image;
}

RgbImage ColorizeDepth(const std::vector<float>& depth, int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.data.assign(static_cast<size_t>(width) * height * 3, 0);
  if (depth.size() != static_cast<size_t>(width) * height || depth.empty()) return image;
  std::vector<float> finite;
  finite.reserve(depth.size());
  for (float d : depth) {
    if (std::isfinite(d)) finite.push_back(d);
  }
  if (finite.empty()) return image;
  const auto percentile = [&finite](double q) {
    const auto nth = finite.begin() + static_cast<std::ptrdiff_t>(q * (finite.size() - 1));
    std::nth_element(finite.begin(), nth, finite.end());
    return *nth;
  };
  const float lo = percentile(0.02);
  const float hi = percentile(0.98);
  const float scale = hi > lo ? 1.0f / (hi - lo) : 0.0f;
  // Piecewise-linear ramp through blue, cyan, green, yellow and red.
  static constexpr float kStops[5][3] = {{0.10f, 0.15f, 0.75f}, {0.05f, 0.75f, 0.95f},
                                         {0.25f, 0.85f, 0.30f}, {0.98f, 0.85f, 0.15f},
                                         {0.85f, 0.12f, 0.10f}};
  for (size_t i = 0; i < depth.size(); ++i) {
    if (!std::isfinite(depth[i])) continue;
    const float t = std::clamp((depth[i] - lo) * scale, 0.0f, 1.0f) * 4.0f;
    const int k = std::min(static_cast<int>(t), 3);
    const float f = t - k;
    for (int ch = 0; ch < 3; ++ch) {
      const float value = kStops[k][ch] * (1.0f - f) + kStops[k + 1][ch] * f;
      image.data[i * 3 + ch] = static_cast<uint8_t>(std::lround(value * 255.0f));
    }
  }
  return image;
}

}  // namespace streamrecon::viewer
