// Exporters for a run's predictions: TUM trajectory, cameras.json, coloured point clouds (PLY,
// through Open3D), depth maps (TIFF + preview PNG, through OpenCV) and a COLMAP text model. All files are written
// atomically (core/atomic_file.h); failures throw FileError naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "core/point_cloud.h"
#include "core/types.h"

namespace streamrecon {

// One line per frame, "timestamp tx ty tz qx qy qz qw", of world_from_cam (the inverse of the
// pose encoding's cam_from_world), after a '#' header line. Timestamps are the frames' indices,
// or timestamps[i] for predictions[i] when given (then one per prediction, else Error).
void WriteTrajectoryTum(const std::filesystem::path& path,
                        const std::vector<CameraRecord>& predictions,
                        const std::vector<double>& timestamps = {});

// {"convention": ..., "frames": [{index, width, height, fx, fy, cx, cy, pose_enc[9],
//  cam_from_world, world_from_cam}, ...]} with the 4x4 matrices as 4 rows of 4 numbers.
void WriteCamerasJson(const std::filesystem::path& path,
                      const std::vector<CameraRecord>& predictions);

// The camera records of predictions (for the writers above).
std::vector<CameraRecord> CameraRecords(const std::vector<FramePrediction>& predictions);

// Whether this build can write PLY files (it was built with Open3D).
bool CanWritePly();

// Binary little-endian PLY with x, y, z (double) and red, green, blue (uchar), through Open3D.
// An empty cloud gives a valid PLY with 0 vertices (Open3D's own reader refuses such files, so
// callers that read back should check the count). Throws Error when built without Open3D.
void WritePointCloudPly(const std::filesystem::path& path, const PointCloud& cloud);

// Per frame, in folder (created if missing): depth_%06d.tiff, the raw depth [H, W] as float32,
// and depth_%06d.png, a preview coloured with COLORMAP_TURBO between the frame's 2nd and 98th
// depth percentiles (near blue, far red; non-finite depth black). %06d is prediction.index.
// Throws Error when built without OpenCV.
void WriteDepthMaps(const std::filesystem::path& folder,
                    const std::vector<FramePrediction>& predictions);

// A picture of the cloud for people who would rather look than read: a width x height PNG
// rendered from behind and above the first camera, looking at the cloud's median point (points
// as 2-pixel splats with a depth test, dark background, the cameras' path in white). Throws Error
// when built without OpenCV and for an empty camera list.
void WriteCloudPreview(const std::filesystem::path& path, const PointCloud& cloud, const std::vector<CameraRecord>& cameras,
                       int width = 960, int height = 720);

// A COLMAP text model of a run in folder, for tools that start from COLMAP (Gaussian splatting,
// NeRF, MVS), written in two parts so that frames need not be kept:
//  * WriteColmapImage, per frame: images/frame_%06d.png, the frame as the model saw it
//    (%06d = prediction.index). Throws Error when built without OpenCV (see CanWriteImages).
//  * WriteColmapSparse, once: sparse/0/cameras.txt, one PINHOLE camera per frame (the predicted
//    intrinsics); sparse/0/images.txt, cam_from_world as QW QX QY QZ TX TY TZ with an empty
//    2D-point line; sparse/0/points3D.txt, the cloud with error 0 and empty tracks. A frame whose
//    predicted focal lengths are not finite and positive is left out (COLMAP cannot read it);
//    returns the indices of the frames left out, so the caller can say so.
// Folders are created when missing.
bool CanWriteImages();
void WriteColmapImage(const std::filesystem::path& folder, const FramePrediction& prediction);
std::vector<int64_t> WriteColmapSparse(const std::filesystem::path& folder, const std::vector<CameraRecord>& cameras,
                                       const PointCloud& cloud);

// The cameras as nerfstudio's transforms.json (read by nerfstudio and Gaussian-splatting tools):
// camera_model PINHOLE; per frame its file_path (image_dir + "/" + the COLMAP image name), its own
// intrinsics (fl_x, fl_y, cx, cy, w, h, in pixels at the model's input size) and transform_matrix,
// the 4x4 camera-to-world in their camera axes (OpenGL: x right, y up, looking down -z; ours are
// OpenCV's, y down and z forward, so the y and z columns flip). The first frame's intrinsics and
// its camera_angle_x also stand at the top level for loaders of one shared camera. Frames whose
// focal lengths are not finite and positive are left out; returns their indices.
std::vector<int64_t> WriteTransformsJson(const std::filesystem::path& path, const std::vector<CameraRecord>& cameras,
                                         const std::string& image_dir);

}  // namespace streamrecon
